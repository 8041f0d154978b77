import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest
from django.conf import settings
from django.db import connection

from kernel.redis import key, sync_client
from marketdata.demo import demo_seed
from marketdata.loop import HEALTH_KEY
from tests.support.stack import database_url
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def tick_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM marketdata_tick")
        return cursor.fetchone()[0]


def test_sigterm_flushes_recorded_ticks_before_exit(tick_table):
    demo_seed()
    sync_client().delete(key(HEALTH_KEY))  # an earlier test's export must not count as this one's
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        "TICK_FLUSH_INTERVAL_S": "600",  # nothing is written until the process is told to stop
        "LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runmarket"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Running once it exports feed health (its signal handlers are in place by then).
        wait_until(lambda: process.poll() is None and sync_client().get(key(HEALTH_KEY)), timeout_s=60)
        time.sleep(1.5)  # the simulator quotes six symbols every 250 ms
        assert process.poll() is None
        assert tick_count() == 0
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # runmarket dumps its threads' stacks
            time.sleep(1)
            process.kill()
            stuck, _ = process.communicate()
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid), left(query, 200)"
                    " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                sessions = "\n".join(map(str, cursor.fetchall()))
            pytest.fail(f"runmarket did not stop within 30 s of SIGTERM:\n{stuck}\nsessions:\n{sessions}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert tick_count() >= 6 * 6  # at least a second and a half of quotes for the six symbols
    assert "unwritten ticks" not in output
    assert [event["kind"] for event in queued_system_events()] == ["process.start", "process.stop"]


def queued_system_events() -> list[dict[str, str]]:
    """The system events the process handed to the alerts worker: Celery messages (kombu's JSON
    envelope, a base64 body of [args, kwargs, embed]) waiting in the broker's default queue."""
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    raw = cast(list[bytes], sync_client().lrange(f"{prefix}{settings.CELERY_TASK_DEFAULT_QUEUE}", 0, -1))
    events = []
    for message in reversed(raw):  # kombu LPUSHes: the oldest is last
        envelope = json.loads(message)
        if envelope["headers"]["task"] == "alerts.tasks.system_event_record":
            args, _, _ = json.loads(base64.b64decode(envelope["body"]))
            events.append(args[0])
    return events
