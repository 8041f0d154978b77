"""The whole stack as `make run` starts it: the Procfile's processes under the supervisor."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from kernel.redis import sync_client
from marketdata.models import FeedHealthSnapshot
from tests.support.stack import run_stack

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fix_venue_healthy(prefix: str) -> bool:
    raw = sync_client().get(f"{prefix}:feed-health")
    rows = [r for r in json.loads(raw) if r["venue"] == "lpfix"] if raw else []
    return len(rows) == 6 and all(r["state"] == "healthy" for r in rows)


def test_the_stack_starts_serves_health_and_readiness_and_stops_cleanly(tmp_path: Path) -> None:
    call_command("seed")
    with run_stack(tmp_path) as stack:
        assert stack.wait_http("/healthz").json() == {"status": "ok"}
        ready = stack.wait_http("/readyz", timeout=60).json()
        assert ready["status"] == "ready"
        assert ready["checks"]["quotes"]["fresh_symbols"] == 6
        # the demo FIX LP logs on and quotes: its venue is healthy for every symbol (a backup to sim)
        deadline = time.monotonic() + 60
        while not fix_venue_healthy(stack.redis_prefix):
            assert time.monotonic() < deadline, stack.output()[-4000:]
            time.sleep(0.5)
        stack.stop()
        output = stack.output()
    assert "Traceback" not in output, output[-4000:]
    for name in ("web", "market", "worker", "beat", "fix", "fixsim"):
        assert f"{name}.1 started" in output
        assert f"{name}.1 stopped" in output


def test_beat_runs_the_feed_health_job_through_the_database_scheduler(
    tmp_path: Path, admin_client: Client, operator: Any
) -> None:
    call_command("seed")
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="feed health snapshot").update(interval=every_second)
    with run_stack(tmp_path) as stack:
        stack.wait_http("/readyz", timeout=60)
        deadline = time.monotonic() + 60
        while not FeedHealthSnapshot.objects.filter(tradable=True).exists():
            assert time.monotonic() < deadline, stack.output()[-4000:]
            time.sleep(0.5)
        stack.stop()
    task = PeriodicTask.objects.get(name="feed health snapshot")
    assert task.total_run_count >= 1 and task.last_run_at is not None
    snapshot = FeedHealthSnapshot.objects.filter(symbol="EURUSD", tradable=True).latest()
    assert snapshot.venue == "sim" and snapshot.bid < snapshot.ask
    page = admin_client.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert "feed health snapshot" in page
    assert "EURUSD" in admin_client.get("/admin/marketdata/feedhealthsnapshot/").content.decode()
