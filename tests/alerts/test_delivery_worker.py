"""End to end with a real Celery worker process: firings -> outbox -> worker -> the Discord fake,
with 429s, 5xx and timeouts interleaved and every task enqueued twice (a redelivery)."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from alerts.models import AlertEvent, AlertRule, Notification, NotificationChannel
from alerts.services import alerts_evaluate_bar_close
from alerts.tasks import notification_deliver
from livermore.celery import app
from marketdata.models import Instrument
from tests.fakes.discord import FakeDiscord, RateLimited, Slow, Status
from tests.support.stack import database_url

from .conftest import BAR, bar_values, channel_for

ROOT = Path(__file__).resolve().parents[2]
RULES = 24


@pytest.fixture
def worker() -> Iterator[Path]:
    """`celery -A livermore worker` on the test database, the same Redis db and prefix as this process."""
    app.control.purge()
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
    }
    log = Path(tempfile.mkstemp(prefix="alerts-worker-", suffix=".log")[1])
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "livermore", "worker", "--pool", "threads", "-c", "4",
             "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.unlink(missing_ok=True)


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
