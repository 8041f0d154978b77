"""Indicator benchmarks.

macdv_1m_bars_vs_talib_ratio: alerts.indicators.macdv over 1,000,000 bars (EMA12 - EMA26, ATR26,
signal EMA9, histogram) divided by TA-Lib computing the same EMAs and ATR (and the same division,
EMA9 and histogram) on the same arrays in the same run; best of interleaved repetitions.
indicator_incremental_us: microseconds per MacdVState.update (the full MACD-V incremental state).
"""

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import django
import numpy as np
import talib

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
django.setup()

from alerts.indicators import MacdVState, ema, macdv  # noqa: E402

BARS = 1_000_000
INCREMENTAL_BARS = 200_000
REPEATS = 9


def bars(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    close = 100 + np.cumsum(rng.normal(0, 0.1, n))
    return close + rng.uniform(0, 0.2, n), close - rng.uniform(0, 0.2, n), close


def talib_macdv(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, ...]:
    value = (talib.EMA(close, 12) - talib.EMA(close, 26)) / talib.ATR(high, low, close, 26) * 100
    signal = talib.EMA(value, 9)
    return value, signal, value - signal


def best_times(runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    high, low, close = bars(BARS)
    # Same EMA definition (seeded with the SMA): check we compare like with like.
    assert np.allclose(ema(close, 12)[11:], talib.EMA(close, 12)[11:], rtol=1e-9, atol=1e-9)
    best = best_times(
        {"ours": lambda: macdv(high, low, close), "talib": lambda: talib_macdv(high, low, close)}
    )
    emit("macdv_1m_bars_vs_talib_ratio", best["ours"] / best["talib"], "ratio", "<= 1.5")

    state = MacdVState()
    update = state.update
    rows = list(zip(*(a[:INCREMENTAL_BARS].tolist() for a in (high, low, close))))
    started = time.perf_counter()
    for h, lo, c in rows:
        update(h, lo, c)
    elapsed = time.perf_counter() - started
    emit("indicator_incremental_us", elapsed / INCREMENTAL_BARS * 1e6, "us", "<= 20")


if __name__ == "__main__":
    main()
