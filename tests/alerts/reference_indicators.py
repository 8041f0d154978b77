"""A tiny reference implementation of the indicators in plain Python (lists, one bar at a time, no
numpy), written straight from the textbook formulas, to check alerts.indicators against.

EMA(n):   alpha = 2/(n+1); EMA[n-1] = mean(x[0..n-1]); EMA[i] = EMA[i-1] + alpha*(x[i] - EMA[i-1]).
Wilder:   the same with alpha = 1/n.
RSI(n):   changes d[i] = x[i]-x[i-1]; average gain/loss seeded with the mean of d[1..n], then Wilder;
          RSI = 100 - 100/(1 + gain/loss), 100 if loss = 0 (50 if both are 0).
TR:       TR[0] = high-low; TR[i] = max(high-low, |high-close[i-1]|, |low-close[i-1]|).
ATR(n):   Wilder over the true ranges of real bars only; synthetic bars repeat the last ATR.
MACD-V:   (EMA12 - EMA26) / ATR26 * 100; signal EMA9 of it from its first value; histogram = difference.
Bollinger: SMA(n) +- k * sqrt(sum((x - SMA)^2) / n).
"""

import math

NAN = math.nan


def ref_sma(x: list[float], n: int) -> list[float]:
    return [NAN if i < n - 1 else sum(x[i - n + 1 : i + 1]) / n for i in range(len(x))]


def _smooth(x: list[float], n: int, alpha: float) -> list[float]:
    out = [NAN] * len(x)
    start = next((i for i, v in enumerate(x) if not math.isnan(v)), len(x))
    if len(x) - start < n:
        return out
    prev = sum(x[start : start + n]) / n
    out[start + n - 1] = prev
    for i in range(start + n, len(x)):
        prev = prev + alpha * (x[i] - prev)
        out[i] = prev
    return out


def ref_ema(x: list[float], n: int) -> list[float]:
    return _smooth(x, n, 2 / (n + 1))


def ref_rsi(x: list[float], n: int) -> list[float]:
    changes = [x[i] - x[i - 1] for i in range(1, len(x))]
    gains = _smooth([max(d, 0.0) for d in changes], n, 1 / n)
    losses = _smooth([max(-d, 0.0) for d in changes], n, 1 / n)
    out = [NAN]
    for g, lo in zip(gains, losses):
        if math.isnan(g):
            out.append(NAN)
        elif lo == 0:
            out.append(50.0 if g == 0 else 100.0)
        else:
            out.append(100 - 100 / (1 + g / lo))
    return out


def ref_true_range(high: list[float], low: list[float], close: list[float]) -> list[float]:
    return [
        high[i] - low[i]
        if i == 0
        else max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(len(close))
    ]


def ref_atr(
    high: list[float], low: list[float], close: list[float], n: int, synthetic: list[bool] | None = None
) -> list[float]:
    synthetic = synthetic or [False] * len(close)
    tr = ref_true_range(high, low, close)
    real = [i for i in range(len(close)) if not synthetic[i]]
    smoothed = dict(zip(real, _smooth([tr[i] for i in real], n, 1 / n)))
    out, last = [], NAN
    for i in range(len(close)):
        last = smoothed.get(i, last)
        out.append(last)
    return out


def ref_macdv(
    high: list[float], low: list[float], close: list[float], synthetic: list[bool] | None = None
) -> tuple[list[float], list[float], list[float]]:
    fast, slow, rng = ref_ema(close, 12), ref_ema(close, 26), ref_atr(high, low, close, 26, synthetic)
    value = [
        NAN if math.isnan(f) or math.isnan(s) or math.isnan(r) else (0.0 if r == 0 else (f - s) / r * 100)
        for f, s, r in zip(fast, slow, rng)
    ]
    signal = ref_ema(value, 9)
    return value, signal, [v - s for v, s in zip(value, signal)]


def ref_bollinger(x: list[float], n: int, k: float) -> tuple[list[float], list[float]]:
    mid = ref_sma(x, n)
    upper, lower = [], []
    for i, m in enumerate(mid):
        if math.isnan(m):
            upper.append(NAN)
            lower.append(NAN)
            continue
        sd = math.sqrt(sum((v - m) ** 2 for v in x[i - n + 1 : i + 1]) / n)
        upper.append(m + k * sd)
        lower.append(m - k * sd)
    return upper, lower
