"""Live and simulated venues in the LP manager, and per-(venue, symbol) priorities."""

import dataclasses
from decimal import Decimal as D

from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.quotes import Quote, SelectedQuote

from .test_lpmanager import Clock, quote

LIVE = VenueSettings(priority=10, stale_after_ms=2000, symbols=frozenset({"EURUSD"}))
SIM = VenueSettings(priority=1, stale_after_ms=2000, simulated=True)


def manager_of(
    clock: Clock, published: list[SelectedQuote], *, allow_simulated: bool = True, **venues: VenueSettings
) -> LPManager:
    return LPManager(venues, outputs=[published.append], clock=clock, allow_simulated=allow_simulated)


def run_for(manager: LPManager, clock: Clock, ms: int, *, quoting: tuple[str, ...], symbol: str) -> None:
    """Advance in 100 ms steps as the market loop's check timer does; the named venues quote `symbol`."""
    for _ in range(ms // 100):
        clock.advance(100)
        for venue in quoting:
            manager.on_quote(quote(clock, venue, symbol=symbol))
        manager.check()


def venues_published(published: list[SelectedQuote], symbol: str = "EURUSD") -> set[str | None]:
    return {p.quote.venue if p.quote and p.tradable else None for p in published if p.symbol == symbol}


def test_a_simulated_venue_is_never_selected_where_a_live_venue_is_enabled_whatever_the_priorities():
    clock, published = Clock(), []
    manager = manager_of(clock, published, live=LIVE, sim=SIM)
    manager.on_quote(quote(clock, "sim"))  # the live venue has not quoted yet: still no simulation
    run_for(manager, clock, 500, quoting=("sim",), symbol="EURUSD")
    assert manager.selected["EURUSD"] is None
    assert published and not published[-1].tradable
    manager.on_quote(quote(clock, "live"))
    run_for(manager, clock, 500, quoting=("sim", "live"), symbol="EURUSD")
    assert manager.selected["EURUSD"] == "live"
    assert venues_published(published) == {None, "live"}
    assert manager.state("EURUSD", "sim", clock.now) == "excluded"


def test_a_live_venue_going_stale_leaves_the_symbol_untradable_not_simulated():
    clock, published = Clock(), []
    manager = manager_of(clock, published, live=LIVE, sim=SIM)
    run_for(manager, clock, 500, quoting=("sim", "live"), symbol="EURUSD")
    assert manager.selected["EURUSD"] == "live"
    run_for(manager, clock, 3000, quoting=("sim",), symbol="EURUSD")  # the live venue goes silent
    assert manager.selected["EURUSD"] is None
    assert not published[-1].tradable
    assert published[-1].quote is not None and published[-1].quote.venue == "live"  # its last price
    assert "sim" not in venues_published(published)
    run_for(manager, clock, 300, quoting=("sim", "live"), symbol="EURUSD")  # and back when it returns
    assert published[-1].tradable and published[-1].quote.venue == "live"


def test_the_simulator_prices_the_symbols_no_live_venue_carries_in_a_demo():
    clock, published = Clock(), []
    manager = manager_of(clock, published, live=LIVE, sim=SIM)
    run_for(manager, clock, 300, quoting=("sim",), symbol="GBPUSD")  # live lists (and quotes) EURUSD only
    assert manager.selected["GBPUSD"] == "sim"
    assert published[-1].tradable


def test_a_live_venue_known_only_from_its_quotes_takes_the_symbol_from_the_simulator():
    clock, published = Clock(), []
    unlisted = VenueSettings(priority=10, stale_after_ms=2000)  # symbols not given: learnt from quotes
    manager = manager_of(clock, published, live=unlisted, sim=SIM)
    run_for(manager, clock, 300, quoting=("sim",), symbol="EURUSD")
    assert manager.selected["EURUSD"] == "sim"
    manager.on_quote(quote(clock, "live"))
    assert manager.selected["EURUSD"] == "live"
    run_for(manager, clock, 3000, quoting=("sim",), symbol="EURUSD")
    assert manager.selected["EURUSD"] is None  # the simulator does not come back


def test_a_disabled_live_venue_no_longer_keeps_the_simulator_out():
    clock, published = Clock(), []
    manager = manager_of(clock, published, live=LIVE, sim=SIM)
    run_for(manager, clock, 300, quoting=("sim", "live"), symbol="EURUSD")
    manager.configure({"live": dataclasses.replace(LIVE, enabled=False), "sim": SIM})
    assert manager.selected["EURUSD"] == "sim"


def test_marking_the_selected_venue_demo_drops_it_at_once():
    clock, published = Clock(), []
    other = VenueSettings(priority=1, stale_after_ms=2000, symbols=frozenset({"EURUSD"}))
    manager = manager_of(clock, published, a=other, b=LIVE)
    run_for(manager, clock, 300, quoting=("a", "b"), symbol="EURUSD")
    assert manager.selected["EURUSD"] == "a"
    manager.configure({"a": VenueSettings(priority=1, stale_after_ms=2000, simulated=True), "b": LIVE})
    assert manager.selected["EURUSD"] == "b"
    assert published[-1].quote is not None and published[-1].quote.venue == "b"


def test_a_live_deployment_never_selects_a_simulated_venue():
    clock, published = Clock(), []
    manager = manager_of(clock, published, allow_simulated=False, sim=SIM)
    run_for(manager, clock, 500, quoting=("sim",), symbol="GBPUSD")
    assert manager.selected["GBPUSD"] is None
    assert venues_published(published, "GBPUSD") == {None}
    assert manager.health_rows(clock.now)[0]["state"] == "excluded"


def test_a_symbols_own_priority_overrides_its_venues():
    clock, published = Clock(), []
    a = VenueSettings(priority=1, stale_after_ms=2000)
    b = VenueSettings(priority=5, stale_after_ms=2000, symbol_priority={"XAUUSD": 0})
    manager = manager_of(clock, published, a=a, b=b)
    for symbol in ("EURUSD", "XAUUSD"):
        run_for(manager, clock, 300, quoting=("a", "b"), symbol=symbol)
    assert manager.selected == {"EURUSD": "a", "XAUUSD": "b"}
    rows = {(r["symbol"], r["venue"]): r["priority"] for r in manager.health_rows(clock.now)}
    assert rows[("XAUUSD", "b")] == 0 and rows[("EURUSD", "b")] == 5
    # it fails over and back on its own priorities
    run_for(manager, clock, 3000, quoting=("a",), symbol="XAUUSD")
    assert manager.selected["XAUUSD"] == "a"
    manager.on_quote(quote(clock, "b", symbol="XAUUSD"))
    assert manager.selected["XAUUSD"] == "b"
    # and a change applied live moves it
    manager.configure({"a": a, "b": VenueSettings(priority=5, stale_after_ms=2000)})
    assert manager.selected["XAUUSD"] == "a"


def test_a_better_symbol_priority_takes_the_symbol_on_its_first_quote():
    clock, published = Clock(), []
    a = VenueSettings(priority=1, stale_after_ms=2000, symbol_priority={"EURUSD": 9})
    b = VenueSettings(priority=5, stale_after_ms=2000)
    manager = manager_of(clock, published, a=a, b=b)
    manager.on_quote(quote(clock, "a"))
    assert manager.selected["EURUSD"] == "a"
    manager.on_quote(Quote("EURUSD", "b", D("1.2"), D("1.3"), venue_ts=clock.now, recv_ts=clock.now))
    assert manager.selected["EURUSD"] == "b"
    assert published[-1].quote is not None and published[-1].quote.bid == D("1.2")
