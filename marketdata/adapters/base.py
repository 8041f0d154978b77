"""What every venue adapter is: an asyncio task that turns a venue's wire format into Quotes.

Adapters import no Django models: they get a VenueConfig and a sink, so they run the same in the
market loop, in tests against tests/fakes/, and in benchmarks.

Liveness: an adapter tells its `FeedListener` (the LP manager) that the venue's connection is alive
on every frame it receives, heartbeats included, and that its books are gone when the connection
ends (or, for Coinbase, while a book is resynced). A quiet book on a live connection is therefore
not stale; a silent connection is. docs/venues.md says what "alive" is per venue kind.

Reconnects: the backoff is reset only after a connection has delivered data for `stable_after_s`
(a venue that accepts and then closes gets ever longer waits), and connection attempts per venue
are capped by `ConnectLimiter` below the venue's documented limit.
"""

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from marketdata.quotes import Quote, Trade, now_ns

log = logging.getLogger(__name__)

QuoteSink = Callable[[Quote], None]
TradeSink = Callable[[Trade], None]


class FeedListener(Protocol):
    """Who wants to know whether a venue's connection is alive (the LP manager)."""

    def venue_alive(self, venue: str, ts_ns: int) -> None:
        """The venue's connection delivered a frame (data or heartbeat) at `ts_ns`."""

    def venue_down(self, venue: str, symbols: Collection[str] | None = None) -> None:
        """The venue's books for `symbols` (None: all of them) are no longer known."""


def official_url(url: str, origins: Collection[str]) -> bool:
    """`url` is one of `origins` ("https://host", "wss://host") exactly: that scheme and host, the
    default port, no user info, path, query or fragment (nothing another URL parser could read as a
    different host). The desk's own keys in the environment are sent only to such a URL, so no venue
    row can redirect them to another server."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return False
    if port not in (None, 443) or parts.username is not None or parts.password is not None:
        return False
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return False
    return f"{parts.scheme.lower()}://{parts.hostname or ''}" in origins


@dataclass(frozen=True)
class VenueConfig:
    code: str
    kind: str
    priority: int = 10
    stale_after_ms: int = 5000
    config: Mapping[str, Any] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    # venue symbol -> our instrument symbol
    symbols: Mapping[str, str] = field(default_factory=dict)
    # instrument symbol -> priority overriding `priority` for it (VenueSymbol.priority)
    symbol_priority: Mapping[str, int] = field(default_factory=dict)
    simulated: bool = False  # Venue.simulated: its prices are not a live market's


@dataclass
class AdapterStats:
    state: str = "starting"
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    quotes: int = 0
    trades: int = 0
    malformed: int = 0
    last_message_ns: int = 0
    last_error: str = ""
    last_error_ns: int = 0
    throttled: int = 0  # connection attempts the ConnectLimiter delayed


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s, self.attempt = base_s, cap_s, 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = self.rng.uniform(0, min(self.cap_s, self.base_s * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class ConnectLimiter:
    """At most `max_attempts` connection attempts in any `window_s` (a sliding window); 0 = no cap.

    A venue that bans repeat offenders (Binance: 300 connections per 5 minutes per IP) must never
    see a reconnect storm, whatever the backoff does."""

    def __init__(
        self, *, max_attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_attempts, self.window_s, self.clock = max_attempts, window_s, clock
        self.attempts: deque[float] = deque()

    def wait_s(self) -> float:
        """How long the next attempt must wait (0: now)."""
        if self.max_attempts <= 0:
            return 0.0
        now = self.clock()
        while self.attempts and self.attempts[0] <= now - self.window_s:
            self.attempts.popleft()
        if len(self.attempts) < self.max_attempts:
            return 0.0
        return self.attempts[0] + self.window_s - now

    def record(self) -> None:
        if self.max_attempts > 0:
            self.attempts.append(self.clock())


class MalformedMessage(ValueError):
    """A frame that does not parse as the venue's format: counted and skipped, never fatal."""


class Adapter(ABC):
    kind: ClassVar[str]
    # Connection attempts per venue: (attempts, window in seconds), below the venue's documented limit
    # (docs/venues.md); a venue's config overrides them with `max_connects` and `connects_window_s`.
    connect_limit: ClassVar[tuple[int, float]] = (0, 60.0)
    # The shortest `stale_after_ms` that makes sense: a live connection shows itself at least this often.
    min_stale_after_ms: ClassVar[int] = 0
    # True for venues whose public feed carries their trades (Coinbase, Binance): given a
    # trade_sink, they stream them, and the market loop builds their bars from trades, not the mid.
    has_trades: ClassVar[bool] = False

    def __init__(
        self,
        venue: VenueConfig,
        sink: QuoteSink,
        *,
        backoff: Backoff | None = None,
        listener: FeedListener | None = None,
        trade_sink: TradeSink | None = None,
    ) -> None:
        self.venue = venue
        self.sink = sink
        self.listener = listener
        self.trade_sink = trade_sink if self.has_trades else None
        self.stats = AdapterStats()
        self.backoff = backoff or Backoff(
            base_s=float(venue.config.get("backoff_base_s", 0.5)),
            cap_s=float(venue.config.get("backoff_cap_s", 30)),
        )
        attempts, window_s = self.connect_limit
        self.limiter = ConnectLimiter(
            max_attempts=int(venue.config.get("max_connects", attempts)),
            window_s=float(venue.config.get("connects_window_s", window_s)),
        )
        # A connection that delivered data for this long was a good one: the backoff starts over.
        self.stable_after_s = float(venue.config.get("stable_after_s", 30))
        self._first_message_ns = 0

    @property
    def silence_timeout_s(self) -> float:
        """How long the connection may be silent before the watchdog drops and reconnects it."""
        return float(self.venue.config.get("silence_timeout_s", 30))

    async def run(self) -> None:
        """Connect, stream, and reconnect forever with backoff, until cancelled."""
        while True:
            wait_s = self.limiter.wait_s()
            if wait_s > 0:
                self.stats.throttled += 1
                self.stats.state = "throttled"
                log.warning(
                    "venue=%s %d connection attempts in %g s: waiting %.1f s",
                    self.venue.code,
                    self.limiter.max_attempts,
                    self.limiter.window_s,
                    wait_s,
                )
                await asyncio.sleep(wait_s)
            self.limiter.record()
            self._first_message_ns = 0
            try:
                self.stats.state = "connecting"
                await self.session()
                # Kept for the admin too: a venue that keeps closing cleanly is worth seeing.
                self.error("session ended (closed by the venue or due for renewal)")
                log.info("venue=%s session ended by peer", self.venue.code)
            except asyncio.CancelledError:
                self.stats.state = "stopped"
                self._down()
                raise
            except Exception as exc:
                self.error(f"{type(exc).__name__}: {exc}")
                log.warning("venue=%s session failed: %s", self.venue.code, self.stats.last_error)
            self._down()
            self.stats.disconnects += 1
            self.stats.state = "backoff"
            if self._was_stable():
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next_delay())

    def _was_stable(self) -> bool:
        """Did the connection that just ended deliver data for at least `stable_after_s`?"""
        first = self._first_message_ns
        return first > 0 and self.stats.last_message_ns - first >= self.stable_after_s * 1e9

    def _down(self) -> None:
        if self.listener is not None:
            self.listener.venue_down(self.venue.code)

    def error(self, text: str) -> None:
        self.stats.last_error = text[:300]
        self.stats.last_error_ns = now_ns()

    def connected(self) -> None:
        self.stats.connects += 1
        self.stats.state = "streaming"
        log.info("venue=%s connected (connect #%d)", self.venue.code, self.stats.connects)

    def message_received(self) -> None:
        """A frame arrived, data or heartbeat: the connection is alive."""
        now = now_ns()
        self.stats.messages += 1
        self.stats.last_message_ns = now
        if not self._first_message_ns:
            self._first_message_ns = now
        if self.listener is not None:
            self.listener.venue_alive(self.venue.code, now)

    def malformed(self, raw: object, exc: Exception) -> None:
        self.stats.malformed += 1
        log.warning(
            "venue=%s malformed message #%d (%s): %.200r", self.venue.code, self.stats.malformed, exc, raw
        )

    def emit(self, quote: Quote) -> None:
        self.stats.quotes += 1
        self.sink(quote)

    @property
    def streams_trades(self) -> bool:
        return self.trade_sink is not None

    def emit_trade(self, trade: Trade) -> None:
        self.stats.trades += 1
        if self.trade_sink is not None:
            self.trade_sink(trade)

    @abstractmethod
    async def session(self) -> None:
        """One connection: connect, subscribe, call `emit` per quote until the connection ends."""
