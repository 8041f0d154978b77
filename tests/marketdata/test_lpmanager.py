from decimal import Decimal as D

import pytest

from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.quotes import Quote, SelectedQuote

MS = 1_000_000
T0 = 1_770_000_000_000 * MS


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms * MS


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def published() -> list[SelectedQuote]:
    return []


@pytest.fixture
def manager(clock: Clock, published: list[SelectedQuote]) -> LPManager:
    venues = {
        "primary": VenueSettings(priority=1, stale_after_ms=2000),
        "backup": VenueSettings(priority=5, stale_after_ms=2000),
    }
    return LPManager(venues, outputs=[published.append], clock=clock)


def quote(clock: Clock, venue: str, bid: str = "1.10000", symbol: str = "EURUSD") -> Quote:
    b = D(bid)
    return Quote(symbol, venue, b, b + D("0.00010"), venue_ts=clock.now, recv_ts=clock.now)


def both_quote(manager: LPManager, clock: Clock) -> None:
    manager.on_quote(quote(clock, "backup", "1.20000"))
    manager.on_quote(quote(clock, "primary", "1.10000"))


def run_for(manager: LPManager, clock: Clock, ms: int, *, quoting: tuple[str, ...] = ()) -> None:
    """Advance time in 100 ms steps, as the market loop's check timer does; the named venues quote."""
    for _ in range(ms // 100):
        clock.advance(100)
        for venue in quoting:
            manager.on_quote(quote(clock, venue))
        manager.check()


def test_it_selects_the_healthy_venue_with_the_best_priority(manager, clock, published):
    both_quote(manager, clock)
    assert manager.selected["EURUSD"] == "primary"
    assert published[-1].quote is not None and published[-1].quote.venue == "primary"
    manager.on_quote(quote(clock, "backup", "1.3"))
    assert published[-1].quote.venue == "primary"  # a worse venue's quote is kept, not published


def test_sequence_numbers_are_per_symbol_and_gapless(manager, clock, published):
    for _ in range(3):
        manager.on_quote(quote(clock, "primary"))
        manager.on_quote(quote(clock, "primary", symbol="GBPUSD"))
    assert [p.seq for p in published if p.symbol == "EURUSD"] == [1, 2, 3]
    assert [p.seq for p in published if p.symbol == "GBPUSD"] == [1, 2, 3]


def test_it_fails_over_within_stale_after_plus_one_second(manager, clock, published):
    both_quote(manager, clock)
    silent_since = clock.now
    for _ in range(40):  # the primary goes silent; the backup keeps quoting every 100 ms
        clock.advance(100)
        manager.on_quote(quote(clock, "backup", "1.2"))
        manager.check()
        if manager.selected["EURUSD"] == "backup":
            break
    waited_ms = (clock.now - silent_since) // MS
    assert manager.selected["EURUSD"] == "backup"
    assert 2000 < waited_ms <= 3000
    assert published[-1].tradable and published[-1].quote.venue == "backup"


def test_it_fails_back_when_the_better_venue_is_healthy_again(manager, clock, published):
    both_quote(manager, clock)
    run_for(manager, clock, 2500, quoting=("backup",))
    assert manager.selected["EURUSD"] == "backup"
    manager.on_quote(quote(clock, "primary", "1.10003"))
    assert manager.selected["EURUSD"] == "primary"
    assert published[-1].quote.venue == "primary" and published[-1].quote.bid == D("1.10003")


def test_with_no_healthy_venue_the_symbol_is_published_untradable_once(manager, clock, published):
    both_quote(manager, clock)
    run_for(manager, clock, 5000)
    untradable = [p for p in published if not p.tradable]
    assert len(untradable) == 1
    assert manager.selected["EURUSD"] is None
    assert untradable[0].quote is not None and untradable[0].quote.venue == "primary"  # last known price
    manager.on_quote(quote(clock, "backup", "1.25"))
    assert published[-1].tradable and published[-1].quote.venue == "backup"


def test_disabling_the_selected_venue_fails_over_at_once(manager, clock, published):
    both_quote(manager, clock)
    manager.configure({"backup": VenueSettings(priority=5, stale_after_ms=2000)})
    assert manager.selected["EURUSD"] == "backup"
    manager.on_quote(quote(clock, "primary", "1.5"))
    assert published[-1].quote.venue == "backup"
    assert manager.state("EURUSD", "primary", clock.now) == "disabled"


def test_a_priority_change_switches_the_selection_live(manager, clock, published):
    both_quote(manager, clock)
    manager.configure(
        {
            "primary": VenueSettings(priority=9, stale_after_ms=2000),
            "backup": VenueSettings(priority=5, stale_after_ms=2000),
        }
    )
    assert manager.selected["EURUSD"] == "backup"


def test_a_staleness_change_applies_live(manager, clock, published):
    both_quote(manager, clock)
    clock.advance(600)
    manager.on_quote(quote(clock, "backup"))
    manager.check()
    assert manager.selected["EURUSD"] == "primary"
    manager.configure(
        {
            "primary": VenueSettings(priority=1, stale_after_ms=500),
            "backup": VenueSettings(priority=5, stale_after_ms=2000),
        }
    )
    assert manager.selected["EURUSD"] == "backup"


def test_quotes_from_unknown_or_disabled_venues_are_ignored(manager, clock, published):
    manager.on_quote(quote(clock, "nobody"))
    manager.configure({"primary": VenueSettings(priority=1, stale_after_ms=2000, enabled=False)})
    manager.on_quote(quote(clock, "primary"))
    assert published == []


def test_health_rows_show_age_rate_and_state(manager, clock):
    both_quote(manager, clock)
    run_for(manager, clock, 1000, quoting=("backup",))
    rows = {r["venue"]: r for r in manager.health_rows(clock.now)}
    assert rows["primary"]["state"] == "selected"
    assert rows["primary"]["age_ms"] == 1000
    assert rows["backup"]["state"] == "healthy"
    assert rows["backup"]["age_ms"] == 0
    assert rows["backup"]["quotes_per_minute"] == 11
    clock.advance(61_000)
    manager.check()
    rows = {r["venue"]: r for r in manager.health_rows(clock.now)}
    assert rows["backup"]["quotes_per_minute"] == 0
    assert rows["backup"]["state"] == "stale"
    assert rows["backup"]["quotes"] == 11


def test_a_failing_output_does_not_starve_the_others(clock, published):
    def broken(selected: SelectedQuote) -> None:
        raise RuntimeError("boom")

    manager = LPManager(
        {"primary": VenueSettings(priority=1, stale_after_ms=2000)},
        outputs=[broken, published.append],
        clock=clock,
    )
    manager.on_quote(quote(clock, "primary"))
    assert len(published) == 1


def test_a_quiet_book_on_a_live_connection_stays_selected(manager, clock, published):
    both_quote(manager, clock)
    for _ in range(100):  # ten seconds without a quote, heartbeats every 100 ms
        clock.advance(100)
        manager.venue_alive("primary", clock.now)
        manager.check()
    assert manager.selected["EURUSD"] == "primary" and published[-1].tradable
    assert len(published) == 2  # both first quotes; nothing moved since: nothing published again
    row = next(r for r in manager.health_rows(clock.now) if r["venue"] == "primary")
    assert (row["state"], row["age_ms"], row["silent_ms"]) == ("selected", 10_000, 0)
    assert manager.state("EURUSD", "backup", clock.now) == "stale"  # silent since its one quote


def test_a_silent_connection_makes_its_quiet_book_stale(manager, clock, published):
    both_quote(manager, clock)
    run_for(manager, clock, 1500)
    assert manager.selected["EURUSD"] == "primary"
    manager.venue_alive("backup", clock.now)  # the backup's connection speaks, the primary's does not
    run_for(manager, clock, 600)
    assert manager.selected["EURUSD"] == "backup"
    assert published[-1].quote.venue == "backup" and published[-1].quote.bid == D("1.20000")


def test_a_venue_reporting_its_book_gone_fails_over_at_once_and_its_next_quote_brings_it_back(
    manager, clock, published
):
    both_quote(manager, clock)
    manager.venue_alive("primary", clock.now)
    manager.venue_down("primary", ["GBPUSD"])  # not this symbol
    assert manager.selected["EURUSD"] == "primary"
    manager.venue_down("primary", ["EURUSD"])
    assert manager.selected["EURUSD"] == "backup" and published[-1].quote.venue == "backup"
    clock.advance(100)
    manager.venue_alive("primary", clock.now)  # alive again, but its book is not known yet
    manager.check()
    assert manager.selected["EURUSD"] == "backup"
    assert manager.state("EURUSD", "primary", clock.now) == "down"
    manager.on_quote(quote(clock, "primary", "1.10005"))
    assert manager.selected["EURUSD"] == "primary" and published[-1].quote.bid == D("1.10005")


def test_a_venue_down_for_all_its_symbols_leaves_them_untradable(clock, published):
    manager = LPManager({"only": VenueSettings(priority=1, stale_after_ms=2000)}, [published.append], clock)
    manager.on_quote(quote(clock, "only"))
    manager.on_quote(quote(clock, "only", symbol="GBPUSD"))
    manager.venue_down("only")
    assert manager.selected == {"EURUSD": None, "GBPUSD": None}
    assert [p.tradable for p in published[-2:]] == [False, False]


def test_it_tells_when_a_venue_goes_silent_and_comes_back_and_each_failover(
    clock: Clock, published: list[SelectedQuote]
) -> None:
    events: list[tuple[str, str, str]] = []
    venues = {
        "primary": VenueSettings(priority=1, stale_after_ms=2000),
        "backup": VenueSettings(priority=5, stale_after_ms=2000),
    }
    manager = LPManager(venues, outputs=[published.append], clock=clock, events=lambda *e: events.append(e))
    manager.on_quote(quote(clock, "primary", "1.10000"))
    manager.on_quote(quote(clock, "backup", "1.20000"))
    manager.check()
    assert events == []  # a venue's first sign of life is no news

    clock.advance(1000)
    manager.venue_alive("backup", clock.now)
    clock.advance(1500)
    manager.venue_alive("backup", clock.now)
    manager.check()
    assert events == [
        ("venue.down", "primary", "connection silent for 2500 ms"),
        ("venue.failover", "EURUSD", "primary -> backup"),
    ]

    events.clear()
    manager.on_quote(quote(clock, "primary", "1.10010"))
    manager.check()
    assert events == [
        ("venue.failover", "EURUSD", "backup -> primary"),
        ("venue.up", "primary", "connection live again"),
    ]

    events.clear()
    clock.advance(2500)
    manager.check()
    assert events == [
        ("venue.down", "primary", "connection silent for 2500 ms"),
        ("venue.down", "backup", "connection silent for 2500 ms"),
        ("venue.failover", "EURUSD", "primary -> none: untradable"),
    ]
