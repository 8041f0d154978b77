import asyncio
import time
from decimal import Decimal as D

import pytest
from django.test import Client

from kernel.redis import key, sync_client
from marketdata.loop import MarketLoop
from marketdata.lpmanager import VenueSettings
from marketdata.quotes import Quote, now_ns


def test_healthz_answers_while_the_process_is_alive(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_not_ready_without_a_fresh_quote(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["checks"]["quotes"] == {"ok": False, "fresh_symbols": 0}
    assert body["checks"]["market_leader"] == {"ok": False, "fence": None}


def export_health_of_a_live_feed(settings) -> None:
    """What the market loop exports once a second while EURUSD quotes on venue sim, under its lease."""
    sync_client().set(key("lease", "market"), "host:1:leader", px=5000)
    sync_client().set(key("fence", "market"), 3)
    settings.QUOTE_LISTENERS = []  # only the health export is under test here
    loop = MarketLoop()
    loop.manager.configure({"sim": VenueSettings(priority=1, stale_after_ms=5000)})
    now = now_ns()
    loop.on_quote(Quote("EURUSD", "sim", D("1.1"), D("1.1001"), venue_ts=now, recv_ts=now))
    asyncio.run(loop.export_health())


@pytest.mark.django_db
def test_readyz_is_ready_with_database_redis_and_a_fresh_selected_quote(client: Client, settings) -> None:
    export_health_of_a_live_feed(settings)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["quotes"] == {"ok": True, "fresh_symbols": 1}
    assert response.json()["checks"]["market_leader"] == {"ok": True, "fence": 3}


@pytest.mark.django_db
def test_readyz_is_not_ready_while_no_market_loop_holds_the_lease(client: Client, settings) -> None:
    export_health_of_a_live_feed(settings)
    sync_client().delete(key("lease", "market"))  # its holder died a moment ago: quotes still fresh
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["market_leader"] == {"ok": False, "fence": 3}


@pytest.mark.django_db
def test_readyz_is_not_ready_once_the_market_process_stopped_exporting(client: Client, settings) -> None:
    settings.READY_QUOTE_MAX_AGE_S = 1
    export_health_of_a_live_feed(settings)  # the last export of a market process that then died
    assert client.get("/readyz").status_code == 200
    time.sleep(1.1)  # the exported key lives on (30 s TTL), its quote ages
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["quotes"] == {"ok": False, "fresh_symbols": 0}


@pytest.mark.django_db
def test_readyz_counts_a_quiet_book_on_a_live_connection_as_fresh(client: Client, settings) -> None:
    settings.QUOTE_LISTENERS = []
    settings.READY_QUOTE_MAX_AGE_S = 1
    loop = MarketLoop()
    loop.manager.configure({"sim": VenueSettings(priority=1, stale_after_ms=5000)})
    long_ago = now_ns() - 3_000_000_000
    loop.on_quote(Quote("EURUSD", "sim", D("1.1"), D("1.1001"), venue_ts=long_ago, recv_ts=long_ago))
    loop.manager.venue_alive("sim", now_ns())  # a heartbeat just now; the book has not moved for 3 s
    sync_client().set(key("lease", "market"), "host:1:leader", px=5000)
    asyncio.run(loop.export_health())
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["quotes"] == {"ok": True, "fresh_symbols": 1}
