"""GET /metrics (token, exposition, every process's figures) and the admin's metrics page."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from alerts.tasks import dead_letters_check
from kernel import metrics
from kernel.redis import key, sync_client
from kernel.sysevents import SystemEventKind, system_event_emit
from marketdata.loop import HEALTH_KEY, RECORDER_KEY, VENUES_KEY

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-for-tests-only"


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def test_metrics_are_off_without_a_token_setting(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_configured"


def test_a_wrong_or_missing_token_is_refused(client: Client, token: str) -> None:
    for header in ("", "Bearer nope", TOKEN):
        response = client.get("/metrics", headers={"Authorization": header} if header else {})
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


def test_the_exposition_has_the_processes_and_the_scrape_time_figures(client: Client, token: str) -> None:
    system_event_emit(SystemEventKind.VENUE_DOWN, subject="coinbase", text="connection silent")
    dead_letters_check.delay()  # no worker here: it waits in the broker
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    lines = response.content.decode().splitlines()
    (down,) = [line for line in lines if line.startswith('livermore_system_events_total{kind="venue.down"}')]
    assert float(down.rsplit(" ", 1)[1]) >= 1
    assert "livermore_outbox_pending 0.0" in lines
    (queue,) = [line for line in lines if line.startswith("livermore_celery_queue_depth{")]
    assert float(queue.rsplit(" ", 1)[1]) >= 1


def test_the_endpoint_adds_up_every_process_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "livermore.settings",
    }
    setup = "import django; django.setup(); from kernel import metrics; "
    for venue in ("coinbase", "binance"):
        count = "metrics.FAILOVERS.labels(symbol='BTCUSD').inc(); "
        count += f"metrics.VENUE_UP.labels(venue='{venue}').set(1)"
        subprocess.run([sys.executable, "-c", setup + count], env=env, check=True, timeout=60)
    scrape = (
        setup + "from django.conf import settings; settings.METRICS_COLLECTORS = []; "
        "print(metrics.metrics_text().decode())"
    )
    scraped = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout.splitlines()
    assert 'livermore_failovers_total{symbol="BTCUSD"} 2.0' in scraped


def test_the_admin_page_shows_the_same_figures_to_those_allowed(
    client: Client, operator: Any, alice: Any
) -> None:
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    url = reverse("admin:alerts_metrics")
    assert client.get(url).status_code == 403
    alice.user_permissions.add(Permission.objects.get(codename="view_metrics"))
    system_event_emit(SystemEventKind.FIX_LOGOUT, subject="LP1", text="logged out")
    metrics.TRIGGER_EXECUTIONS.labels(kind="tp", outcome="closed").inc()
    metrics.RECORDER_LAG.observe(0.7)
    page = client.get(url)
    assert page.status_code == 200
    assert b"livermore_outbox_pending" in page.content and b"livermore_system_events" in page.content
    assert b"kind=fix.logout" in page.content
    assert b"livermore_trigger_executions" in page.content and b"kind=tp, outcome=closed" in page.content
    assert b"livermore_recorder_lag_seconds" in page.content and b"le=1.0" in page.content


def test_the_market_process_figures_come_from_what_it_exports(client: Client, token: str) -> None:
    now_ms = int(time.time() * 1000)
    row = {"symbol": "BTCUSD", "venue": "coinbase", "age_ms": 250, "silent_ms": 250, "quotes_per_minute": 120}
    redis = sync_client()
    redis.set(key(HEALTH_KEY), json.dumps([{**row, "state": "selected", "exported_ms": now_ms}]))
    redis.set(key(VENUES_KEY), json.dumps([{"venue": "coinbase", "reconnects": 3}]))
    redis.set(
        key(RECORDER_KEY), json.dumps({"written": 1000, "buffered": 12, "dropped": 0, "candles_stored": 7})
    )
    lines = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode().splitlines()
    (age,) = [
        line
        for line in lines
        if line.startswith('livermore_quote_age_seconds{symbol="BTCUSD",venue="coinbase"}')
    ]
    assert 0.25 <= float(age.rsplit(" ", 1)[1]) < 5
    assert 'livermore_quotes_per_minute{symbol="BTCUSD",venue="coinbase"} 120.0' in lines
    assert 'livermore_feed_selected{symbol="BTCUSD",venue="coinbase"} 1.0' in lines
    assert 'livermore_venue_reconnects_total{venue="coinbase"} 3.0' in lines
    assert "livermore_recorder_buffered 12.0" in lines
    assert "livermore_recorder_written_total 1000.0" in lines
    assert "livermore_recorder_candles_stored_total 7.0" in lines
