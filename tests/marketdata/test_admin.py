import json
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from django.urls import reverse

from kernel.redis import key, sync_client
from marketdata.loop import HEALTH_KEY, RECORDER_KEY, VENUES_KEY
from marketdata.models import Candle, Venue

from .conftest import simulator_venue

pytestmark = pytest.mark.django_db


def test_the_live_page_shows_per_feed_health_and_the_recorder(admin_client, eurusd):
    rows = [
        {
            "symbol": "EURUSD",
            "venue": "lp-a",
            "age_ms": 120,
            "silent_ms": 80,
            "quotes_per_minute": 240,
            "quotes": 999,
            "state": "selected",
            "priority": 1,
            "stale_after_ms": 2000,
            "adapter_state": "streaming",
            "malformed": 0,
        },
        {
            "symbol": "EURUSD",
            "venue": "lp-b",
            "age_ms": 7300,
            "silent_ms": 7100,
            "quotes_per_minute": 3,
            "quotes": 10,
            "state": "stale",
            "priority": 5,
            "stale_after_ms": 2000,
            "adapter_state": "backoff",
            "malformed": 2,
        },
    ]
    recorder = {
        "written": 12345,
        "buffered": 17,
        "dropped": 4,
        "failures": 1,
        "last_error": "OperationalError: gone",
        "candles_late": 2,
        "candles_stored": 60,
        "candles_unstored": 0,
    }
    sync_client().set(key(HEALTH_KEY), json.dumps(rows))
    sync_client().set(key(RECORDER_KEY), json.dumps(recorder))
    response = admin_client.get(reverse("admin:marketdata_live_quotes"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<tr class="state-selected"><td>EURUSD</td><td>lp-a</td><td>selected</td><td>1</td>' in html
    assert "<td>7300</td><td>7100</td><td>3</td><td>backoff</td><td>2</td>" in html
    assert "<td>12345</td>" in html and "OperationalError: gone" in html


def test_the_live_page_shows_each_venues_reconnects_and_last_error(admin_client):
    venues = [
        {
            "venue": "bn",
            "kind": "binance",
            "state": "throttled",
            "connects": 100,
            "reconnects": 100,
            "throttled": 4,
            "messages": 0,
            "silent_ms": None,
            "last_error": "ConnectionClosedError: received 1011 (internal error) going away",
            "last_error_ms": 1_780_000_000_000,
            "exported_ms": 1_780_000_000_500,
        },
        {
            "venue": "cb",
            "kind": "coinbase",
            "state": "streaming",
            "connects": 1,
            "reconnects": 0,
            "throttled": 0,
            "messages": 5321,
            "silent_ms": 310,
            "last_error": "",
            "last_error_ms": None,
            "exported_ms": 1_780_000_000_500,
        },
    ]
    sync_client().set(key(VENUES_KEY), json.dumps(venues))
    html = admin_client.get(reverse("admin:marketdata_live_quotes")).content.decode()
    assert (
        '<tr class="adapter-throttled"><td>bn</td><td>binance</td><td>throttled</td><td>100</td><td>100</td>'
        "<td>4</td>" in html
    )
    assert "received 1011 (internal error) going away" in html
    assert 'data-ms="1780000000000"' in html
    assert (
        '<tr class="adapter-streaming"><td>cb</td><td>coinbase</td><td>streaming</td><td>1</td><td>0</td>'
        in html
    )


def test_the_live_page_needs_staff(client):
    response = client.get(reverse("admin:marketdata_live_quotes"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_live_page_says_when_the_market_process_is_silent(admin_client):
    html = admin_client.get(reverse("admin:marketdata_live_quotes")).content.decode()
    assert "is the market process" in html and "not reporting" in html


def test_candles_are_read_only_in_the_admin(admin_client, eurusd):
    c = Candle.objects.create(
        instrument=eurusd,
        timeframe="1m",
        start=datetime(2026, 3, 2, 10, tzinfo=UTC),
        open=D(1),
        high=D(1),
        low=D(1),
        close=D(1),
    )
    assert admin_client.get(reverse("admin:marketdata_candle_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:marketdata_candle_add")).status_code == 403
    page = admin_client.get(reverse("admin:marketdata_candle_change", args=[c.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert (
        admin_client.post(reverse("admin:marketdata_candle_delete", args=[c.pk]), {"post": "yes"}).status_code
        == 403
    )


def test_operators_disable_and_reprioritise_venues_from_the_list(admin_client, eurusd):
    venue = simulator_venue("lp-a", priority=1, symbols=[eurusd])
    url = reverse("admin:marketdata_venue_changelist")
    admin_client.post(url, {"action": "disable", "_selected_action": [venue.pk]})
    venue.refresh_from_db()
    assert venue.enabled is False
    data = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(venue.pk),
        "form-0-enabled": "on",
        "form-0-priority": "7",
        "_save": "Save",
    }
    assert admin_client.post(url, data).status_code == 302
    assert Venue.objects.filter(pk=venue.pk, enabled=True, priority=7).exists()
