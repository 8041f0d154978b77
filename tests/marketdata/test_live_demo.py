"""Live and demo deployments: runmarket refuses simulated venues in a live one, the admin refuses to
enable a simulated venue in a live one, and a per-(venue, symbol) priority is applied by the running
market loop."""

import asyncio
import contextlib
import signal
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from kernel.redis import key, sync_client
from marketdata.loop import HEALTH_KEY, MarketLoop
from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
from marketdata.quotes import SelectedQuote
from tests.support.instruments import make_instrument
from tests.support.stack import ROOT, production_env
from tests.support.waiting import await_until, wait_until
from users.models import AuditLog

from .conftest import simulator_venue


def demo_fix_venue(symbols: list[Instrument]) -> Venue:
    venue = Venue.objects.create(code="lpdemo", name="LP simulator", kind=VenueKind.FIX, demo=True)
    for i in symbols:
        VenueSymbol.objects.create(venue=venue, instrument=i, venue_symbol=f"{i.symbol[:3]}/{i.symbol[3:]}")
    return venue


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runmarket_in_production_refuses_to_start_with_a_simulated_venue_enabled():
    eurusd = make_instrument("EURUSD")
    simulator_venue("sim", priority=1, symbols=[eurusd])
    demo_fix_venue([eurusd])
    Venue.objects.create(code="sim-off", name="off", kind=VenueKind.SIMULATOR, enabled=False)
    result = subprocess.run(
        [sys.executable, "manage.py", "runmarket"],
        cwd=ROOT,
        env=production_env(REDIS_PREFIX=django_settings.REDIS_PREFIX),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Refusing to start: simulated venue(s) lpdemo, sim enabled and this deployment is live" in (
        result.stderr
    )
    assert not sync_client().exists(key("lease", "market"))  # it stopped before taking the lease


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runmarket_in_production_runs_the_simulator_when_the_deployment_says_it_is_a_demo():
    eurusd = make_instrument("EURUSD")
    simulator_venue("sim", priority=1, symbols=[eurusd])
    sync_client().delete(key(HEALTH_KEY))
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runmarket"],
        cwd=ROOT,
        env=production_env(LIVERMORE_DEMO="true", REDIS_PREFIX=django_settings.REDIS_PREFIX),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(
            lambda: process.poll() is None and b'"selected"' in (sync_client().get(key(HEALTH_KEY)) or b""),
            timeout_s=60,
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output


@pytest.mark.django_db(transaction=True)
async def test_a_live_market_loop_never_starts_a_simulated_venue_enabled_while_it_runs(
    settings, thread_db_closed, caplog
):
    settings.LIVERMORE_DEMO = False
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim", priority=1, symbols=[eurusd])
    loop = MarketLoop()
    assert not loop.manager.allow_simulated
    await loop.reload()
    await loop.reload()
    assert loop.adapters == {}
    assert loop.refused == {"sim"}
    assert loop.manager.venues == {}
    refusals = [r for r in caplog.records if "simulated, and this deployment is live" in r.getMessage()]
    assert len(refusals) == 1  # said once, not on every reload


@pytest.mark.django_db
def test_the_admin_refuses_to_enable_a_simulated_venue_in_a_live_deployment(admin_client, settings):
    settings.LIVERMORE_DEMO = False
    sim = Venue.objects.create(code="sim", name="Simulator", kind=VenueKind.SIMULATOR, enabled=False)
    demo = Venue.objects.create(code="lpdemo", name="LP simulator", kind=VenueKind.FIX, enabled=False)
    changelist = "/admin/marketdata/venue/"
    response = admin_client.post(changelist, {"action": "enable", "_selected_action": [sim.pk]}, follow=True)
    assert "Venue sim is simulated: this deployment is live" in response.content.decode()
    sim.refresh_from_db()
    assert not sim.enabled
    assert not AuditLog.objects.filter(action="venue.enable").exists()

    form = {
        "code": "lpdemo",
        "name": "LP simulator",
        "kind": "fix",
        "demo": "on",
        "enabled": "on",
        "priority": "20",
        "stale_after_ms": "3000",
        "config": "{}",
        "new_credentials": "",
        "symbols-TOTAL_FORMS": "0",
        "symbols-INITIAL_FORMS": "0",
    }
    response = admin_client.post(f"{changelist}{demo.pk}/change/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "this deployment is live (LIVERMORE_DEMO)" in response.content.decode()
    demo.refresh_from_db()
    assert not demo.enabled and not demo.demo

    settings.LIVERMORE_DEMO = True
    response = admin_client.post(f"{changelist}{demo.pk}/change/", form)
    assert response.status_code == 302
    demo.refresh_from_db()
    assert demo.enabled and demo.demo and demo.simulated


@pytest.mark.django_db
def test_a_symbols_priority_is_edited_in_the_venues_admin_page(admin_client, eurusd):
    venue = simulator_venue("sim-a", priority=1, symbols=[eurusd])
    link = VenueSymbol.objects.get(venue=venue)
    form = {
        "code": "sim-a",
        "name": "sim-a",
        "kind": "simulator",
        "enabled": "on",
        "priority": "1",
        "stale_after_ms": "1000",
        "config": '{"seed": 1}',
        "new_credentials": "",
        "symbols-TOTAL_FORMS": "1",
        "symbols-INITIAL_FORMS": "1",
        "symbols-0-id": str(link.pk),
        "symbols-0-venue": str(venue.pk),
        "symbols-0-instrument": str(eurusd.pk),
        "symbols-0-venue_symbol": "EURUSD",
        "symbols-0-enabled": "on",
        "symbols-0-priority": "0",
    }
    response = admin_client.post(f"/admin/marketdata/venue/{venue.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    link.refresh_from_db()
    assert link.priority == 0
    form["symbols-0-priority"] = ""
    admin_client.post(f"/admin/marketdata/venue/{venue.pk}/change/", form)
    link.refresh_from_db()
    assert link.priority is None


@pytest.mark.django_db(transaction=True)
async def test_the_running_loop_prices_each_symbol_from_the_venue_its_own_priority_prefers(
    tick_table, thread_db_closed
):
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    xauusd = await sync_to_async(make_instrument)("XAUUSD", digits=2)
    await sync_to_async(simulator_venue)("lp-a", priority=1, symbols=[eurusd, xauusd])
    await sync_to_async(simulator_venue)("lp-b", priority=5, symbols=[eurusd, xauusd])
    await sync_to_async(VenueSymbol.objects.filter(venue__code="lp-b", instrument=xauusd).update)(priority=0)
    seen: list[SelectedQuote] = []
    loop = MarketLoop(reload_interval_s=0.3, extra_outputs=[seen.append])
    task = asyncio.create_task(loop.run())

    def last_venue(symbol: str) -> str | None:
        last = next((s for s in reversed(seen) if s.symbol == symbol), None)
        return last.quote.venue if last and last.quote and last.tradable else None

    try:
        await await_until(lambda: last_venue("EURUSD") == "lp-a" and last_venue("XAUUSD") == "lp-b")
        lp_b_task = loop.adapters["lp-b"][2]
        await sync_to_async(VenueSymbol.objects.filter(venue__code="lp-b", instrument=xauusd).update)(
            priority=None
        )
        await await_until(lambda: last_venue("XAUUSD") == "lp-a", timeout_s=5)
        assert last_venue("EURUSD") == "lp-a"
        assert loop.adapters["lp-b"][2] is lp_b_task  # a priority change does not reconnect
        await sync_to_async(VenueSymbol.objects.filter(venue__code="lp-b", instrument=eurusd).update)(
            priority=0
        )
        await await_until(lambda: last_venue("EURUSD") == "lp-b", timeout_s=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
