"""What every venue adapter is: an asyncio task that turns a venue's wire format into Quotes.

Adapters import no Django models: they get a VenueConfig and a sink, so they run the same in the
market loop, in tests against tests/fakes/, and in benchmarks.
"""

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marketdata.quotes import Quote, Trade, now_ns

log = logging.getLogger(__name__)

QuoteSink = Callable[[Quote], None]
TradeSink = Callable[[Trade], None]


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


class MalformedMessage(ValueError):
    """A frame that does not parse as the venue's format: counted and skipped, never fatal."""


class Adapter(ABC):
    kind: ClassVar[str]
    # True for venues whose public feed carries their trades (Coinbase, Binance): given a
    # trade_sink, they stream them, and the market loop builds their bars from trades, not the mid.
    has_trades: ClassVar[bool] = False

    def __init__(
        self,
        venue: VenueConfig,
        sink: QuoteSink,
        *,
        backoff: Backoff | None = None,
        trade_sink: TradeSink | None = None,
    ) -> None:
        self.venue = venue
        self.sink = sink
        self.trade_sink = trade_sink if self.has_trades else None
        self.stats = AdapterStats()
        self.backoff = backoff or Backoff(
            base_s=float(venue.config.get("backoff_base_s", 0.5)),
            cap_s=float(venue.config.get("backoff_cap_s", 30)),
        )

    @property
    def silence_timeout_s(self) -> float:
        """How long the connection may be silent before the watchdog drops and reconnects it."""
        return float(self.venue.config.get("silence_timeout_s", 30))

    async def run(self) -> None:
        """Connect, stream, and reconnect forever with backoff, until cancelled."""
        while True:
            try:
                self.stats.state = "connecting"
                await self.session()
                log.info("venue=%s session ended by peer", self.venue.code)
            except asyncio.CancelledError:
                self.stats.state = "stopped"
                raise
            except Exception as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("venue=%s session failed: %s", self.venue.code, self.stats.last_error)
            self.stats.disconnects += 1
            self.stats.state = "backoff"
            await asyncio.sleep(self.backoff.next_delay())

    def connected(self) -> None:
        self.stats.connects += 1
        self.stats.state = "streaming"
        self.backoff.reset()
        log.info("venue=%s connected (connect #%d)", self.venue.code, self.stats.connects)

    def message_received(self) -> None:
        self.stats.messages += 1
        self.stats.last_message_ns = now_ns()

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
