"""End to end with real Celery worker processes: firings -> outbox -> worker -> the Discord fake,
with 429s, 5xx and timeouts interleaved and every task enqueued twice (a redelivery); and a worker
killed (SIGKILL) mid-delivery, whose lost tasks the requeue job makes good."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from alerts.models import AlertEvent, AlertRule, Notification, NotificationChannel
from alerts.services import alerts_evaluate_bar_close
from alerts.tasks import notification_deliver, notifications_requeue
from kernel.redis import sync_client
from livermore.celery import app
from marketdata.models import Instrument
from tests.fakes.discord import FakeDiscord, RateLimited, Slow, Status
from tests.support.stack import database_url
from tests.support.waiting import wait_until

from .conftest import BAR, bar_values, channel_for

ROOT = Path(__file__).resolve().parents[2]
RULES = 24


@contextmanager
def celery_worker(**env_overrides: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`celery -A livermore worker` (4 threads) on the test database, the same Redis db and prefix as
    this process; stopped (SIGTERM) on leaving unless the test killed it already."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        "ALERTS_WEBHOOK_HOSTS": "discord.com,127.0.0.1",
        "ALERTS_DISCORD_TIMEOUT_S": "1",
        "ALERTS_DELIVERY_BACKOFF_S": "0.2",
        "ALERTS_DELIVERY_MAX_ATTEMPTS": "6",
        "LOG_LEVEL": "INFO",
        **env_overrides,
    }
    log = Path(tempfile.mkstemp(prefix="alerts-worker-", suffix=".log")[1])
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "livermore", "worker", "--pool", "threads", "-c", "4",
             "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.unlink(missing_ok=True)


@pytest.fixture
def worker() -> Iterator[Path]:
    app.control.purge()
    with celery_worker() as (_, log):
        yield log


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_every_firing_is_delivered_once_or_marked_failed(worker: Path, alice: Any, btc: Instrument) -> None:
    with FakeDiscord(bucket_limit=4, bucket_window_s=1.0) as discord:
        live, live_id = channel_for(alice, discord)
        dead, dead_id = channel_for(alice, discord)
        discord.delete_webhook(dead_id)
        discord.script(
            live_id,
            RateLimited(0.5), Status(500), Slow(2.0), Status(502), RateLimited(0.3, is_global=True),
            Slow(2.0), Status(503), RateLimited(0.2), Status(500),
        )  # fmt: skip
        for i in range(RULES):
            AlertRule.objects.create(
                user=alice,
                instrument=btc,
                timeframe="5m",
                condition="greater_than",
                threshold=Decimal(90000 + i),
            )
        events = alerts_evaluate_bar_close(
            symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(0)
        )
        assert len(events) == RULES
        for pk in Notification.objects.values_list("pk", flat=True):
            notification_deliver.delay(pk)  # a second copy of every task: redelivery must be harmless

        deadline = time.monotonic() + 120
        while Notification.objects.filter(status="pending").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        log_text = worker.read_text()
        assert not Notification.objects.filter(status="pending").exists(), log_text[-3000:]

        sent = Notification.objects.filter(channel=live)
        assert sent.count() == RULES and set(sent.values_list("status", flat=True)) == {"sent"}
        failed = Notification.objects.filter(channel=dead)
        assert failed.count() == RULES and set(failed.values_list("status", flat=True)) == {"failed"}
        assert not NotificationChannel.objects.get(pk=dead.pk).enabled

        footers = Counter(r.payload["embeds"][0]["footer"]["text"] for r in discord.posted(live_id))
        assert footers == Counter({f"Livermore alert #{e.pk}": 1 for e in AlertEvent.objects.all()})
        statuses = Counter(r.status for r in discord.received if r.webhook_id == live_id)
        assert (
            statuses[429] >= 3 and statuses[504] == 2 and statuses[500] + statuses[502] + statuses[503] == 4
        )
        dead_statuses = [r.status for r in discord.received if r.webhook_id == dead_id]
        assert set(dead_statuses) == {404} and len(dead_statuses) <= 4  # at most one per worker thread
        for token in (discord.webhooks[live_id],):
            assert token not in log_text


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_loses_nothing_once_the_requeue_job_runs(
    alice: Any, btc: Instrument
) -> None:
    """The first worker is SIGKILLed while its four threads each wait on a Discord answer (the fake
    holds them; those messages are not posted). Its tasks die with it: acknowledged late, they would
    come back only after the broker's visibility timeout (an hour). A second worker drains the
    queue, the lost rows stay pending, then the requeue job (run by that worker, as beat runs it)
    sends them again once their in-flight claims run out: every firing ends delivered once, or
    failed for the dead webhook, and the four whose first request's outcome is unknown are flagged
    `maybe_duplicated`."""
    app.control.purge()
    unacked = [
        f"{settings.REDIS_PREFIX}:celery:{name}" for name in ("unacked", "unacked_index", "unacked_mutex")
    ]
    with FakeDiscord(bucket_limit=50, bucket_window_s=1.0) as discord:
        live, live_id = channel_for(alice, discord)
        dead, dead_id = channel_for(alice, discord)
        discord.delete_webhook(dead_id)
        discord.script(live_id, *[Slow(20.0)] * 4)  # held in flight (a gateway timeout after 20 s)
        for i in range(12):
            AlertRule.objects.create(
                user=alice,
                instrument=btc,
                timeframe="5m",
                condition="greater_than",
                threshold=Decimal(90000 + i),
            )
        events = alerts_evaluate_bar_close(
            symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(0)
        )
        assert len(events) == 12 and Notification.objects.count() == 24  # delivery tasks queued on commit

        def live_requests() -> int:
            return sum(r.webhook_id == live_id for r in discord.received)

        try:
            with celery_worker(ALERTS_DISCORD_TIMEOUT_S="30") as (first, first_log):
                wait_until(
                    lambda: live_requests() >= 4,
                    timeout_s=60,
                    what=f"four requests in flight: {first_log.read_text()[-2000:]}",
                )
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            assert discord.posted(live_id) == []  # the four in flight were never answered
            in_flight = Notification.objects.filter(channel=live, status="pending").count()
            assert in_flight >= 4
            # Their claims were committed before the requests went out: they may have been posted.
            claimed = set(
                Notification.objects.filter(in_flight_until__isnull=False).values_list("pk", flat=True)
            )
            assert len(claimed) == 4

            with celery_worker(ALERTS_REQUEUE_GRACE_S="0") as (_, second_log):
                # the queue drains; what the killed worker held stays pending
                last = [-1, time.monotonic()]

                def settled() -> bool:
                    pending = Notification.objects.filter(status="pending").count()
                    if pending != last[0]:
                        last[:] = [pending, time.monotonic()]
                    return time.monotonic() - last[1] > 5

                wait_until(settled, timeout_s=90, what="the queue to drain")
                lost = Notification.objects.filter(status="pending")
                assert lost.exists() and set(lost.values_list("attempts", flat=True)) == {0}

                notifications_requeue.delay()
                wait_until(
                    lambda: not Notification.objects.filter(status="pending").exists(),
                    timeout_s=90,
                    what=f"the requeued rows: {second_log.read_text()[-2000:]}",
                )
        finally:
            sync_client().delete(*unacked)  # the killed worker's reservations: no later worker restores them

        sent = Notification.objects.filter(channel=live)
        assert set(sent.values_list("status", flat=True)) == {"sent"}
        assert set(Notification.objects.filter(channel=dead).values_list("status", flat=True)) == {"failed"}
        footers = Counter(r.payload["embeds"][0]["footer"]["text"] for r in discord.posted(live_id))
        assert footers == Counter({f"Livermore alert #{e.pk}": 1 for e in AlertEvent.objects.all()})
        # Redelivered once their claims ran out, and flagged: the first request's outcome is unknown.
        assert {n.pk for n in sent if n.maybe_duplicated} == claimed
        unknown = [e for n in sent if n.pk in claimed for e in n.attempt_log if e["outcome"] == "unknown"]
        assert len(unknown) == 4 and all("mid-request" in e["error"] for e in unknown)
