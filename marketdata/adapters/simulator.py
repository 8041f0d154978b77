"""The default venue: a seeded random walk with realistic spreads, so the system runs with no
credentials and no internet. Deterministic for a given seed: `step()` is pure of wall time."""

import asyncio
import math
import random
from dataclasses import dataclass
from decimal import Decimal

from marketdata.quotes import Quote, now_ns

from .base import Adapter, QuoteSink, VenueConfig


@dataclass
class _Walk:
    symbol: str
    price: float
    half_spread: Decimal
    quantum: Decimal  # the instrument's price increment, e.g. 0.00001 for EURUSD


class RandomWalk:
    """Geometric random walk per symbol; `vol_bps` is the per-step standard deviation in basis points."""

    def __init__(self, symbols: dict[str, dict[str, str]], *, seed: int, vol_bps: float = 0.5) -> None:
        self.rng = random.Random(seed)
        self.sigma = vol_bps / 10_000
        self.walks = []
        for symbol, spec in sorted(symbols.items()):
            price = Decimal(spec["price"])
            quantum = Decimal(1).scaleb(int(price.as_tuple().exponent))
            self.walks.append(_Walk(symbol, float(price), Decimal(spec["spread"]) / 2, quantum))

    def step(self, venue: str, ts_ns: int) -> list[Quote]:
        quotes = []
        for walk in self.walks:
            walk.price *= math.exp(self.rng.gauss(0.0, self.sigma))
            mid = Decimal(repr(walk.price)).quantize(walk.quantum)
            size = Decimal(self.rng.randint(1, 50))
            quotes.append(
                Quote(
                    symbol=walk.symbol,
                    venue=venue,
                    bid=mid - walk.half_spread,
                    ask=mid + walk.half_spread,
                    venue_ts=ts_ns,
                    recv_ts=ts_ns,
                    bid_size=size,
                    ask_size=size,
                )
            )
        return quotes


class SimulatorAdapter(Adapter):
    kind = "simulator"

    def __init__(self, venue: VenueConfig, sink: QuoteSink, **kwargs: object) -> None:
        super().__init__(venue, sink, **kwargs)  # type: ignore[arg-type]
        cfg = venue.config
        # Simulate only the instruments mapped to this venue.
        specs = {sym: spec for sym, spec in cfg.get("symbols", {}).items() if sym in venue.symbols.values()}
        self.walk = RandomWalk(specs, seed=int(cfg.get("seed", 1)), vol_bps=float(cfg.get("vol_bps", 0.5)))
        self.interval_s = float(cfg.get("interval_ms", 250)) / 1000

    async def session(self) -> None:
        self.connected()
        while True:
            ts = now_ns()
            self.message_received()
            for quote in self.walk.step(self.venue.code, ts):
                self.emit(quote)
            await asyncio.sleep(self.interval_s)
