"""LP manager: keeps the latest quote per (symbol, venue) and selects per symbol the healthy venue
with the best priority (the venue's, or its own for that symbol). Pure Python, no Django, no I/O:
outputs are callables it is given.

A feed (venue, symbol) is healthy while its venue is enabled, its book is known (a quote came and
the adapter has not reported the book gone since) and the venue's connection is not silent: its last
sign of life (any frame, heartbeats included, see `venue_alive`) is at most `stale_after_ms` old. A
quiet book on a live connection therefore stays healthy with its last quote; a silent connection
makes every feed of the venue stale. Quotes of the selected venue are published as they come; the
manager fails over when `check` (a timer, every 100 ms in the market loop) finds the selected feed
stale or at once when its adapter reports its book gone (`venue_down`), and fails back on the first
quote of a better healthy venue. With no healthy venue the symbol is published once as untradable.

Live and simulated prices never mix: a simulated venue (the simulator, a demo LP) is never selected
for a symbol that an enabled live venue carries, whatever the priorities, so a live venue going stale
leaves the symbol untradable rather than priced by a simulation; with `allow_simulated` off (a live
deployment) simulated venues are never selected at all.
"""

import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from marketdata.quotes import Quote, SelectedQuote, now_ns

log = logging.getLogger(__name__)

Output = Callable[[SelectedQuote], None]
# (kind, subject, text): "venue.down" / "venue.up" (subject the venue), "venue.failover" (the symbol)
EventSink = Callable[[str, str, str], None]
MINUTE_NS = 60_000_000_000


@dataclass(frozen=True)
class VenueSettings:
    priority: int
    stale_after_ms: int
    enabled: bool = True
    simulated: bool = False
    # instrument symbol -> the priority this venue has for it instead of `priority`
    symbol_priority: Mapping[str, int] = field(default_factory=dict)
    # the instrument symbols it is configured to quote; None when not known (then only the symbols
    # it has quoted count as carried)
    symbols: frozenset[str] | None = None

    def priority_for(self, symbol: str) -> int:
        return self.symbol_priority.get(symbol, self.priority)


@dataclass
class FeedHealth:
    """Health of one (venue, symbol) feed, as shown in the admin."""

    last_quote: Quote | None = None
    last_recv_ns: int = 0
    count: int = 0
    live: bool = False  # the book is known: False after the adapter reported it gone, until a quote
    recent: deque[int] = field(default_factory=deque)  # receive times within the last minute

    def quotes_per_minute(self, now: int) -> int:
        horizon = now - MINUTE_NS
        recent = self.recent
        while recent and recent[0] < horizon:
            recent.popleft()
        return len(recent)


class LPManager:
    def __init__(
        self,
        venues: dict[str, VenueSettings],
        outputs: Iterable[Output] = (),
        clock: Callable[[], int] = now_ns,
        *,
        allow_simulated: bool = True,
        leading: Callable[[], bool] = lambda: True,
        events: EventSink | None = None,
    ) -> None:
        self.venues = dict(venues)
        # False once this process's leader lease may have expired (a process frozen past it and
        # woken up): nothing is numbered or published until it is renewed; counted in `fenced`.
        self.leading = leading
        self.fenced = 0
        self.events = events
        self.venue_up: dict[str, bool] = {}  # venue -> its connection showed life within its window
        self.outputs = list(outputs)
        self.clock = clock
        self.allow_simulated = allow_simulated
        self.feeds: dict[str, dict[str, FeedHealth]] = {}  # symbol -> venue -> health
        self.selected: dict[str, str | None] = {}  # symbol -> venue code, None when untradable
        self.seq: dict[str, int] = {}
        self.last: dict[str, SelectedQuote] = {}
        self.alive_ns: dict[str, int] = {}  # venue -> last sign of life of its connection
        self.live_symbols: set[str] = set()  # symbols an enabled live venue carries
        self._update_live()

    # -- inputs ---------------------------------------------------------------------------------
    def on_quote(self, quote: Quote) -> None:
        settings = self.venues.get(quote.venue)
        if settings is None or not settings.enabled:
            return
        symbol, venue, now = quote.symbol, quote.venue, quote.recv_ts
        feeds = self.feeds.get(symbol)
        if feeds is None:
            feeds = self.feeds[symbol] = {}
        health = feeds.get(venue)
        new_live = False
        if health is None:
            health = feeds[venue] = FeedHealth()
            if not settings.simulated and symbol not in self.live_symbols:
                self.live_symbols.add(symbol)
                new_live = True  # a simulated venue selected for the symbol must go
        health.last_quote, health.last_recv_ns, health.live = quote, now, True
        health.count += 1
        recent = health.recent
        recent.append(now)
        if recent[0] < now - MINUTE_NS:
            recent.popleft()
        current = self.selected.get(symbol)
        if current == venue:
            self._publish(symbol, quote, True)
            return
        if self.excluded(symbol, settings):
            return  # kept for its health only
        if (
            new_live
            or current is None
            or (current_settings := self.venues.get(current)) is None
            or settings.priority_for(symbol) < current_settings.priority_for(symbol)
            or not self.healthy(symbol, current, now)
        ):
            self._reselect(symbol, now)

    def venue_alive(self, venue: str, ts_ns: int) -> None:
        """The venue's connection delivered a frame (data or heartbeat): its books are current."""
        if ts_ns > self.alive_ns.get(venue, 0):
            self.alive_ns[venue] = ts_ns

    def venue_down(self, venue: str, symbols: Collection[str] | None = None) -> None:
        """The venue's books (for `symbols`, else all) are gone: connection lost, book resyncing or
        one-sided. Its feeds are not healthy until their next quote; fail over now."""
        now = self.clock()
        for symbol, feeds in self.feeds.items():
            health = feeds.get(venue)
            if health is None or not health.live or (symbols is not None and symbol not in symbols):
                continue
            health.live = False
            if self.selected.get(symbol) == venue:
                self._reselect(symbol, now)

    def check(self) -> None:
        """Called on a timer: fail over from stale venues, publish untradable when none is healthy."""
        now = self.clock()
        self._check_venues(now)
        for symbol in self.feeds:
            current = self.selected.get(symbol)
            if current is None or not self.healthy(symbol, current, now):
                self._reselect(symbol, now)

    def _check_venues(self, now: int) -> None:
        """Tells the event sink when an enabled venue's connection goes silent or comes back (not
        when it first shows life)."""
        last_quote: dict[str, int] = {}
        for feeds in self.feeds.values():
            for venue, health in feeds.items():
                if health.last_recv_ns > last_quote.get(venue, 0):
                    last_quote[venue] = health.last_recv_ns
        for venue, settings in self.venues.items():
            alive = max(self.alive_ns.get(venue, 0), last_quote.get(venue, 0))
            if not alive or not settings.enabled:
                continue
            up = now - alive <= settings.stale_after_ms * 1_000_000
            was = self.venue_up.get(venue)
            if was == up:
                continue
            self.venue_up[venue] = up
            if self.events is not None and (was is not None or not up):
                silent_ms = (now - alive) // 1_000_000
                self.events(
                    "venue.up" if up else "venue.down",
                    venue,
                    "connection live again" if up else f"connection silent for {silent_ms} ms",
                )

    def configure(self, venues: dict[str, VenueSettings]) -> None:
        """Apply venue changes (enable, disable, priorities, staleness, live or simulated) without a
        restart."""
        if venues == self.venues:
            return
        self.venues = dict(venues)
        self._update_live()
        now = self.clock()
        for symbol in self.feeds:
            self._reselect(symbol, now)

    def seed_seq(self, seqs: dict[str, int]) -> None:
        """Continue each symbol's numbering after `seqs` (the last numbers a previous run published)."""
        for symbol, seq in seqs.items():
            self.seq[symbol] = max(self.seq.get(symbol, 0), seq)

    # -- state ----------------------------------------------------------------------------------
    def _update_live(self) -> None:
        live: set[str] = set()
        for code, settings in self.venues.items():
            if settings.enabled and not settings.simulated:
                live.update(settings.symbols or ())
                live.update(symbol for symbol, feeds in self.feeds.items() if code in feeds)
        self.live_symbols = live

    def excluded(self, symbol: str, settings: VenueSettings) -> bool:
        """Whether a venue's prices may not price `symbol`: simulated ones where a live venue is."""
        return settings.simulated and (not self.allow_simulated or symbol in self.live_symbols)

    def healthy(self, symbol: str, venue: str, now: int) -> bool:
        settings = self.venues.get(venue)
        health = self.feeds.get(symbol, {}).get(venue)
        if settings is None or not settings.enabled or health is None or not health.live:
            return False
        alive = max(health.last_recv_ns, self.alive_ns.get(venue, 0))
        return now - alive <= settings.stale_after_ms * 1_000_000

    def state(self, symbol: str, venue: str, now: int) -> str:
        settings = self.venues.get(venue)
        if settings is None or not settings.enabled:
            return "disabled"
        if self.excluded(symbol, settings):
            return "excluded"  # simulated, and the symbol has a live venue (or the deployment is live)
        if self.selected.get(symbol) == venue:
            return "selected"
        if self.healthy(symbol, venue, now):
            return "healthy"
        health = self.feeds.get(symbol, {}).get(venue)
        return "down" if health is not None and not health.live else "stale"

    def health_rows(self, now: int) -> list[dict[str, object]]:
        """Per-(venue, symbol) health: last quote age, quotes per minute, state, priority."""
        rows: list[dict[str, object]] = []
        for symbol, feeds in self.feeds.items():
            for venue, health in feeds.items():
                settings = self.venues.get(venue)
                rows.append(
                    {
                        "symbol": symbol,
                        "venue": venue,
                        "age_ms": (now - health.last_recv_ns) // 1_000_000,
                        # time since the venue's connection last showed life: what staleness is judged on
                        "silent_ms": (now - max(health.last_recv_ns, self.alive_ns.get(venue, 0)))
                        // 1_000_000,
                        "quotes_per_minute": health.quotes_per_minute(now),
                        "quotes": health.count,
                        "state": self.state(symbol, venue, now),
                        "priority": settings.priority_for(symbol) if settings else None,
                        "stale_after_ms": settings.stale_after_ms if settings else None,
                    }
                )
        return rows

    # -- selection ------------------------------------------------------------------------------
    def _reselect(self, symbol: str, now: int) -> None:
        best: str | None = None
        best_priority = 0
        for venue in self.feeds[symbol]:
            if self.healthy(symbol, venue, now):
                settings = self.venues[venue]
                if self.excluded(symbol, settings):
                    continue
                priority = settings.priority_for(symbol)
                if best is None or (priority, venue) < (best_priority, best):
                    best, best_priority = venue, priority
        previous = self.selected.get(symbol)
        if best is not None:
            if best == previous:
                return
            self.selected[symbol] = best
            log.info("symbol=%s venue %s -> %s", symbol, previous, best)
            if previous is not None and self.events is not None:
                self.events("venue.failover", symbol, f"{previous} -> {best}")
            self._publish(symbol, self.feeds[symbol][best].last_quote, True)
        elif previous is not None or symbol not in self.last:
            self.selected[symbol] = None
            log.warning("symbol=%s no healthy venue (was %s): untradable", symbol, previous)
            if previous is not None and self.events is not None:
                self.events("venue.failover", symbol, f"{previous} -> none: untradable")
            last = self.last.get(symbol)
            self._publish(symbol, last.quote if last else None, False)

    def _publish(self, symbol: str, quote: Quote | None, tradable: bool) -> None:
        if not self.leading():
            self.fenced += 1
            return
        seq = self.seq.get(symbol, 0) + 1
        self.seq[symbol] = seq
        selected = SelectedQuote(symbol=symbol, seq=seq, quote=quote, tradable=tradable)
        self.last[symbol] = selected
        for output in self.outputs:
            try:
                output(selected)
            except Exception:
                log.exception("quote output %r failed on %s", output, symbol)
