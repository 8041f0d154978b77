"""candle_builder_quotes_per_s: selected mids through the candle builder (all six timeframes) in one
process, Decimal prices, six symbols, three days of quotes so every timeframe opens and closes bars."""

import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from marketdata.candles import NS, CandleBuilder
from tests.bench.metric import emit

QUOTES = 2_000_000
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD", "ETHUSD")


def main() -> None:
    rng = random.Random(7)
    prices = [Decimal("1.08500") + Decimal(rng.randint(-500, 500)).scaleb(-5) for _ in range(4096)]
    start = 1_772_409_600 * NS  # 2026-03-02 00:00 UTC
    step = 3 * 86_400 * NS // QUOTES
    builder = CandleBuilder()
    add = builder.add
    closed = 0
    began = time.perf_counter()
    for i in range(QUOTES):
        closed += len(add(SYMBOLS[i % 6], start + i * step, prices[i & 4095]))
    elapsed = time.perf_counter() - began
    assert closed > 6 * 3 * 24 * 60 and builder.late == 0
    emit("candle_builder_quotes_per_s", QUOTES / elapsed, "quotes/s", ">= 200000")


if __name__ == "__main__":
    main()
