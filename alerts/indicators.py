"""Technical indicators over bar history. No Django imports.

Every indicator has two forms that agree to 1e-9: a vectorised function over the full history
(numpy, with the recursive smoothings run in C by scipy.signal.lfilter, or over long histories in
blocks as matrix products: `_filter_blocked`) and an incremental state object whose `update(...)`
takes one closed bar. Values before an indicator is seeded are NaN.

Formulas (index i counts bars from 0):
- SMA(n)[i] = mean(x[i-n+1..i]), valid from i = n-1.
- EMA(n): alpha = 2/(n+1); EMA[n-1] = SMA(n)[n-1]; EMA[i] = alpha*x[i] + (1-alpha)*EMA[i-1].
  Leading NaNs in the input are skipped (the EMA is seeded on the first n valid values).
- Wilder smoothing(n): the same recursion with alpha = 1/n, seeded with the mean of the first n values.
- RSI(n): Wilder-smoothed gains and losses of close-to-close changes, seeded with the mean of the
  first n changes (valid from bar n); RSI = 100*gain/(gain+loss), 50 when both are 0.
- True range: TR[0] = high-low; TR[i] = max(high-low, |high-close[i-1]|, |low-close[i-1]|)
  = max(high, close[i-1]) - min(low, close[i-1]).
- ATR(n): Wilder smoothing of the true ranges of real bars, seeded with the mean of the first n of
  them. A synthetic (gap-filled) bar adds no true range and carries the ATR forward unchanged.
- MACD(12,26,9): EMA12-EMA26, signal = EMA9 of it, histogram = MACD - signal. Once both EMAs are
  seeded, the difference runs as one second-order filter (the two EMAs' transfer functions
  subtracted): one pass instead of two, same values to rounding.
- MACD-V = (EMA12(close) - EMA26(close)) / ATR26 * 100 (0 where the ATR is 0: no range, no move),
  signal = EMA9 of MACD-V seeded on its first 9 valid values, histogram = MACD-V - signal.
  The EMAs run over every bar (a synthetic close is the last real close). Over a long history, once
  the signal is seeded, the rest runs as one compiled pass (`_macdv_fused`, numba) that keeps every
  recursion in step bar by bar, as MacdVState does: the separate passes above cost more in memory
  traffic and fresh pages than in arithmetic.
- Bollinger(n, k): middle = SMA(n), upper/lower = middle +- k * population standard deviation.

Seeds are sums taken with math.fsum (correctly rounded) in both forms, so the forms stay in step
even on badly conditioned data.

MACD-V stages (`macdv_stage`) are the StockCharts range rules as the replaced Livermore monitor
applied them, and its diagnostics (`Diagnostics`: nEff, span, liquidity tier) are its definitions;
this module is their only implementation (rules.bias and every text, embed, stream and API use it).
"""

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray
from scipy.signal import lfilter

FloatArray = NDArray[np.float64]
NAN = math.nan

LOW_TRADING_ACTIVITY = "Low trading activity"
NOT_ENOUGH_BARS = "Not enough bars"

MACDV_FAST, MACDV_SLOW, MACDV_SIGNAL, MACDV_ATR = 12, 26, 9, 26

OVERSOLD = "oversold"
OVERBOUGHT = "overbought"
RALLYING = "rallying"
REBOUNDING = "rebounding"
REVERSING = "reversing"
RETRACING = "retracing"
RANGING = "ranging"
UNKNOWN = "unknown"
# Livermore's order of classification; "unknown" last.
MACDV_STAGES = (OVERSOLD, OVERBOUGHT, RALLYING, REBOUNDING, REVERSING, RETRACING, RANGING, UNKNOWN)
BULLISH_STAGES = frozenset({OVERSOLD, REBOUNDING, RALLYING})
BEARISH_STAGES = frozenset({OVERBOUGHT, RETRACING, REVERSING})

# Diagnostics (see Diagnostics): the window and the liquidity tiers of the replaced Livermore monitor.
DIAGNOSTIC_REAL_BARS = 200
LIQUIDITY_HIGH, LIQUIDITY_MEDIUM, LIQUIDITY_LOW = "high", "medium", "low"
LIQUIDITY_TIERS = (LIQUIDITY_HIGH, LIQUIDITY_MEDIUM, LIQUIDITY_LOW)
LIQUIDITY_HIGH_BELOW = 0.2  # share of synthetic bars
LIQUIDITY_MEDIUM_BELOW = 0.5

_ROLLING_CHUNK = 1 << 16
# Recursions over at least _BLOCKED_FROM values run in blocks of _BLOCK as matrix products
# (_filter_blocked), _GEMM_ROWS blocks per product: m*n*k within OpenBLAS's threshold for threads
# (65536*4), so it runs on the calling thread. Shorter ones run in lfilter, cheaper per call.
# MACD-V over at least _BLOCKED_FROM bars runs in _macdv_fused once seeded, if that is within
# _SEEDED_WITHIN bars (else, with too few real bars, all in passes).
_BLOCK = 16
_BLOCKED_FROM = 1 << 14
_GEMM_ROWS = 65536 * 4 // (_BLOCK * _BLOCK)
_SEEDED_WITHIN = 1024


def _floats(x: ArrayLike) -> FloatArray:
    return np.ascontiguousarray(x, dtype=np.float64)


def _check_period(n: int) -> None:
    if n < 1:
        raise ValueError(f"period must be at least 1, not {n}")


def _smooth(x: FloatArray, alpha: float, seed: float, out: FloatArray) -> None:
    """out[i] = alpha*x[i] + (1-alpha)*out[i-1] with out[-1] = seed."""
    if x.size >= _BLOCKED_FROM:
        _filter_blocked(x, [(alpha, 1.0, seed)], out)
    elif x.size:
        out[:] = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * seed])[0]


def _filter_blocked(x: FloatArray, modes: list[tuple[float, float, float]], out: FloatArray) -> None:
    """out[i] = the sum over `modes` (alpha, gain, state) of gain*s[i], s[i] = alpha*x[i] + (1-alpha)*s[i-1]
    with s[-1] = state: EMA-type recursions (one, or two for EMA(fast) - EMA(slow)) run in blocks.

    Within a block of _BLOCK values each output is a fixed weighted sum of the block's inputs plus one
    of the modes' states before it, so blocks are rows of a matrix product; the states at the blocks'
    ends are a recursion over one value per block. lfilter spends about 5 ns per value on its delay
    line, this about 2."""
    block = _BLOCK
    blocks, rest = divmod(x.size, block)
    lag = np.subtract.outer(np.arange(block), np.arange(block))  # lag[i, j] = i - j
    weights = np.zeros((block, block))  # weights[i, j]: of input i in output j
    # At least two columns of states: numpy's matmul over an inner dimension of 1 is not BLAS's.
    width = max(len(modes), 2)
    from_state = np.zeros((width, block))
    to_end = np.empty((block, len(modes)))
    states = np.zeros((blocks + 1, width))  # before each block, and after the last
    for r, (alpha, gain, state) in enumerate(modes):
        decay = (1.0 - alpha) ** np.arange(block + 1)
        weights += np.where(lag <= 0, gain * alpha * decay[np.maximum(-lag, 0)], 0.0)
        from_state[r] = gain * decay[1:]
        to_end[:, r] = alpha * decay[block - 1 :: -1]
        states[0, r] = state
    inputs = x[: blocks * block].reshape(blocks, block)
    for r, (alpha, _, state) in enumerate(modes):
        # einsum, not @: a matrix-vector product this long would start BLAS threads.
        ends = np.einsum("ij,j->i", inputs, to_end[:, r])
        carry = (1.0 - alpha) ** block
        states[1:, r] = lfilter([1.0], [1.0, -carry], ends, zi=[carry * state])[0]
    tail = x[blocks * block :] @ weights[:rest, :rest] + states[blocks] @ from_state[:, :rest]
    outputs = out[: blocks * block].reshape(blocks, block)
    from_states = np.empty((min(blocks, _GEMM_ROWS), block))
    for lo in range(0, blocks, _GEMM_ROWS):
        part = outputs[lo : lo + _GEMM_ROWS]
        np.matmul(inputs[lo : lo + _GEMM_ROWS], weights, out=part)
        added = from_states[: part.shape[0]]
        part += np.matmul(states[lo : lo + part.shape[0]], from_state, out=added)
    out[blocks * block :] = tail


def _first_valid(x: FloatArray) -> int:
    if x.size and not math.isnan(x[0]):
        return 0
    valid = ~np.isnan(x)
    return int(np.argmax(valid)) if valid.any() else x.size


def _seeded_smooth(x: FloatArray, n: int, alpha: float) -> FloatArray:
    """Seed with the mean of the first n valid values (leading NaNs skipped), then smooth."""
    first = _first_valid(x)
    if x.size - first < n:
        return np.full(x.size, NAN)
    seed_at = first + n - 1
    seed = math.fsum(x[first : seed_at + 1]) / n
    out = np.empty(x.size)
    out[:seed_at] = NAN
    out[seed_at] = seed
    _smooth(x[seed_at + 1 :], alpha, seed, out[seed_at + 1 :])
    return out


def ema(x: ArrayLike, n: int) -> FloatArray:
    _check_period(n)
    return _seeded_smooth(_floats(x), n, 2.0 / (n + 1))


def wilder(x: ArrayLike, n: int) -> FloatArray:
    _check_period(n)
    return _seeded_smooth(_floats(x), n, 1.0 / n)


def _diff_filter(fast: int, slow: int) -> tuple[list[float], list[float]]:
    """Coefficients (b, a) of EMA(fast) - EMA(slow) as one second-order filter:
    (a1 - a2 + (a2 b1 - a1 b2) z^-1) / ((1 - b1 z^-1)(1 - b2 z^-1)), a = alpha, b = 1 - alpha."""
    a1, a2 = 2.0 / (fast + 1), 2.0 / (slow + 1)
    b1, b2 = 1.0 - a1, 1.0 - a2
    return [a1 - a2, a2 * b1 - a1 * b2, 0.0], [1.0, -(b1 + b2), b1 * b2]


def _diff_state(fast: int, slow: int, e1: float, e2: float) -> list[float]:
    """The filter's delay line after a bar where EMA(fast) = e1 and EMA(slow) = e2."""
    b1, b2 = 1.0 - 2.0 / (fast + 1), 1.0 - 2.0 / (slow + 1)
    return [b1 * e1 - b2 * e2, -(b1 * b2) * (e1 - e2)]


def ema_diff(x: ArrayLike, fast: int, slow: int) -> FloatArray:
    """EMA(fast) - EMA(slow) (the MACD line), in one filter pass once both EMAs are seeded."""
    _check_period(fast)
    _check_period(slow)
    values = _floats(x)
    head = min(values.size, _first_valid(values) + max(fast, slow))
    fast_head, slow_head = ema(values[:head], fast), ema(values[:head], slow)
    out = np.empty(values.size)
    out[:head] = fast_head - slow_head
    if head < values.size and not math.isnan(out[head - 1]):
        e1, e2 = float(fast_head[-1]), float(slow_head[-1])
        if values.size - head >= _BLOCKED_FROM:
            modes = [(2.0 / (fast + 1), 1.0, e1), (2.0 / (slow + 1), -1.0, e2)]
            _filter_blocked(values[head:], modes, out[head:])
        else:
            b, a = _diff_filter(fast, slow)
            out[head:] = lfilter(b, a, values[head:], zi=_diff_state(fast, slow, e1, e2))[0]
    else:
        out[head:] = NAN
    return out


def sma(x: ArrayLike, n: int) -> FloatArray:
    _check_period(n)
    values = _floats(x)
    out = np.full(values.size, NAN)
    if values.size >= n:
        out[n - 1 :] = sliding_window_view(values, n).mean(axis=1)
    return out


def rsi(close: ArrayLike, n: int = 14) -> FloatArray:
    _check_period(n)
    values = _floats(close)
    out = np.full(values.size, NAN)
    if values.size <= n:
        return out
    change = np.diff(values)
    gain = wilder(np.maximum(change, 0.0), n)
    loss = wilder(np.maximum(-change, 0.0), n)
    total = gain + loss
    # 100*gain/total, and 50 where nothing moved at all.
    out[1:] = np.divide(100.0 * gain, total, out=np.full(total.size, 50.0), where=total != 0)
    return out


def true_range(high: ArrayLike, low: ArrayLike, close: ArrayLike) -> FloatArray:
    h, lo, c = _floats(high), _floats(low), _floats(close)
    if h.size <= 1:
        return h - lo
    # max(high, prev close) - min(low, prev close) is max(h-l, |h-pc|, |l-pc|) for high >= low, to the
    # last bit (rounding is monotonic), in three passes instead of six; in chunks that stay in cache.
    tr = np.empty(h.size)
    tr[0] = h[0] - lo[0]
    lows = np.empty(min(h.size - 1, _ROLLING_CHUNK))
    for start in range(1, h.size, _ROLLING_CHUNK):
        stop = min(start + _ROLLING_CHUNK, h.size)
        part, prev, least = tr[start:stop], c[start - 1 : stop - 1], lows[: stop - start]
        np.maximum(h[start:stop], prev, out=part)
        part -= np.minimum(lo[start:stop], prev, out=least)
    return tr


def _synthetic_mask(synthetic: ArrayLike | None, size: int) -> NDArray[np.bool_] | None:
    if synthetic is None:
        return None
    mask = np.asarray(synthetic, dtype=bool)
    if mask.shape != (size,):
        raise ValueError("synthetic must have one flag per bar")
    return mask if mask.any() else None


def atr(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 14, synthetic: ArrayLike | None = None
) -> FloatArray:
    _check_period(n)
    tr = true_range(high, low, close)
    mask = _synthetic_mask(synthetic, tr.size)
    if mask is None:
        return wilder(tr, n)
    real = np.flatnonzero(~mask)
    out = np.full(tr.size, NAN)
    out[real] = wilder(tr[real], n)
    # A synthetic bar takes the ATR of the last real bar before it.
    last_real = np.maximum.accumulate(np.where(mask, -1, np.arange(tr.size)))
    carried = out[np.maximum(last_real, 0)]
    carried[last_real < 0] = NAN
    return carried


@dataclass(frozen=True, slots=True)
class Macd:
    macd: FloatArray
    signal: FloatArray
    histogram: FloatArray


def macd(close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
    values = _floats(close)
    line = ema_diff(values, fast, slow)
    sig = ema(line, signal)
    return Macd(macd=line, signal=sig, histogram=line - sig)


@dataclass(frozen=True, slots=True)
class Bollinger:
    middle: FloatArray
    upper: FloatArray
    lower: FloatArray


def bollinger(close: ArrayLike, n: int = 20, k: float = 2.0) -> Bollinger:
    _check_period(n)
    values = _floats(close)
    middle = sma(values, n)
    std = np.full(values.size, NAN)
    if values.size >= n:
        windows = sliding_window_view(values, n)
        means = middle[n - 1 :]
        # In chunks: the deviations of every window would otherwise need N*n floats at once.
        for lo in range(0, windows.shape[0], _ROLLING_CHUNK):
            hi = lo + _ROLLING_CHUNK
            dev = windows[lo:hi] - means[lo:hi, None]
            std[n - 1 + lo : n - 1 + hi] = np.sqrt(np.einsum("ij,ij->i", dev, dev) / n)
    return Bollinger(middle=middle, upper=middle + k * std, lower=middle - k * std)


def liquidity_tier(gap_ratio: float) -> str:
    """high below 20% synthetic bars, medium below 50%, low from 50% (Livermore's classifyLiquidity)."""
    if gap_ratio < LIQUIDITY_HIGH_BELOW:
        return LIQUIDITY_HIGH
    if gap_ratio < LIQUIDITY_MEDIUM_BELOW:
        return LIQUIDITY_MEDIUM
    return LIQUIDITY_LOW


class DiagnosticsJson(TypedDict):
    n_eff: int
    span: int
    gap_ratio: float
    liquidity: str


@dataclass(frozen=True, slots=True)
class Diagnostics:
    """What stands behind a bar's MACD-V, as the replaced Livermore monitor reported it: over the
    last DIAGNOSTIC_REAL_BARS real bars (it read that many stored candles and gap-filled between them),
    `n_eff` real bars (the true ranges its ATR was fed) spread over `span` bars, from the first of them
    to the last; the rest of the span is synthetic (gap) bars, and their share gives the liquidity tier."""

    n_eff: int
    span: int

    @property
    def gap_ratio(self) -> float:
        return (self.span - self.n_eff) / self.span if self.span else 0.0

    @property
    def liquidity(self) -> str:
        return liquidity_tier(self.gap_ratio)

    def to_json(self) -> "DiagnosticsJson":
        return {
            "n_eff": self.n_eff,
            "span": self.span,
            "gap_ratio": self.gap_ratio,
            "liquidity": self.liquidity,
        }


def macdv_diagnostics(synthetic: ArrayLike | None, size: int) -> Diagnostics:
    """Diagnostics of the last of `size` bars, `synthetic` flagging the gap-filled ones (None: none)."""
    mask = _synthetic_mask(synthetic, size)
    if mask is None:
        n = min(size, DIAGNOSTIC_REAL_BARS)
        return Diagnostics(n_eff=n, span=n)
    real = np.flatnonzero(~mask)[-DIAGNOSTIC_REAL_BARS:]
    if not real.size:
        return Diagnostics(n_eff=0, span=0)
    return Diagnostics(n_eff=int(real.size), span=int(real[-1] - real[0]) + 1)


@dataclass(frozen=True, slots=True)
class MacdV:
    """MACD-V over a history. `seeded` tells whether the last bar has a value; if not, `reason` why
    (always "Low trading activity", as Livermore said: its ATR has not seen enough real bars).
    `diagnostics` describe the last bar."""

    value: FloatArray
    signal: FloatArray
    histogram: FloatArray
    atr: FloatArray
    seeded: bool
    reason: str | None
    diagnostics: Diagnostics


def unseeded_reason(bars: int, real_bars: int, atr_period: int, slow: int) -> str:
    if bars >= max(atr_period, slow) and real_bars < atr_period:
        return LOW_TRADING_ACTIVITY
    return NOT_ENOUGH_BARS


def macdv(
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    synthetic: ArrayLike | None = None,
    *,
    fast: int = MACDV_FAST,
    slow: int = MACDV_SLOW,
    signal: int = MACDV_SIGNAL,
    atr_period: int = MACDV_ATR,
) -> MacdV:
    h, lo, c = _floats(high), _floats(low), _floats(close)
    mask = _synthetic_mask(synthetic, c.size)
    fused = c.size >= _BLOCKED_FROM
    bars = min(c.size, _SEEDED_WITHIN) if fused else c.size
    value, sig, range_ = _macdv_passes(h, lo, c, mask, fast, slow, signal, atr_period, bars)
    if not (fused and sig.size and not math.isnan(sig[-1])):
        if bars < c.size:
            value, sig, range_ = _macdv_passes(h, lo, c, mask, fast, slow, signal, atr_period, c.size)
        histogram = value - sig
    else:
        # The passes over the head seed every recursion; the fused pass carries them on from there.
        head = int(np.argmax(~np.isnan(sig))) + 1
        value, sig, range_ = value[:head], sig[:head], range_[:head]
        outputs = np.empty((4, c.size))
        outputs[:, :head] = value, sig, value - sig, range_
        alphas = (2.0 / (fast + 1), 2.0 / (slow + 1), 1.0 / atr_period, 2.0 / (signal + 1))
        emas = float(ema(c[:head], fast)[-1]), float(ema(c[:head], slow)[-1])
        states = (*emas, float(range_[-1]), float(sig[-1]))
        synthetic_flags = np.zeros(0, dtype=bool) if mask is None else mask
        _macdv_fused(h, lo, c, synthetic_flags, head, alphas, states, outputs)
        value, sig, histogram, range_ = outputs
    seeded = bool(c.size and not math.isnan(value[-1]))
    return MacdV(
        value=value,
        signal=sig,
        histogram=histogram,
        atr=range_,
        seeded=seeded,
        reason=None if seeded else LOW_TRADING_ACTIVITY,
        diagnostics=macdv_diagnostics(mask, c.size),
    )


def _macdv_passes(
    h: FloatArray,
    lo: FloatArray,
    c: FloatArray,
    mask: NDArray[np.bool_] | None,
    fast: int,
    slow: int,
    signal: int,
    atr_period: int,
    bars: int,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD-V's value, signal and ATR over the first `bars` bars, as vectorised passes."""
    h, lo, c = h[:bars], lo[:bars], c[:bars]
    range_ = atr(h, lo, c, atr_period, None if mask is None else mask[:bars])
    diff = ema_diff(c, fast, slow)
    flat = range_ == 0
    flat_valid = flat & ~np.isnan(diff) if flat.any() else None
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.divide(diff, range_, out=diff)
    if flat_valid is not None:
        value[flat_valid] = 0.0
    value *= 100.0
    return value, ema(value, signal), range_


@njit(cache=True, nogil=True)
def _macdv_fused(
    h: FloatArray,
    lo: FloatArray,
    c: FloatArray,
    synthetic: NDArray[np.bool_],
    start: int,
    alphas: tuple[float, float, float, float],
    states: tuple[float, float, float, float],
    out: FloatArray,
) -> None:
    """MACD-V's recursions from bar `start` on, in step: the fast and slow EMAs, the ATR (Wilder; a
    synthetic bar, flagged in `synthetic` unless it is empty, carries it) and the signal EMA, with
    `alphas` and their `states` after bar start-1 in that order, into out = (value, signal, histogram,
    ATR) rows; the arithmetic of EmaState, AtrState and MacdVState, over arrays."""
    a1, a2, a3, a4 = alphas
    e1, e2, range_, sig = states
    b1, b2, b3, b4 = 1.0 - a1, 1.0 - a2, 1.0 - a3, 1.0 - a4
    any_synthetic = synthetic.size > 0
    for i in range(start, c.size):
        x = c[i]
        e1 = a1 * x + b1 * e1
        e2 = a2 * x + b2 * e2
        if not (any_synthetic and synthetic[i]):
            prev = c[i - 1]
            tr = np.maximum(h[i], prev) - np.minimum(lo[i], prev)
            range_ = a3 * tr + b3 * range_
        diff = e1 - e2
        value = 0.0 if range_ == 0.0 and diff == diff else diff / range_ * 100.0
        sig = a4 * value + b4 * sig
        out[0, i] = value
        out[1, i] = sig
        out[2, i] = value - sig
        out[3, i] = range_


def macdv_stage(value: float | None, signal: float | None) -> str:
    """The MACD-V stage of one bar: the StockCharts range rules as the replaced Livermore monitor
    applied them (its classifyMACDVStage). "Above" is value > signal, "below" value < signal; a value
    equal to its signal is neither. A missing (None or NaN) value or signal is "unknown".

    First match wins:
      1. oversold    value < -150
      2. overbought  value > 150 and above
      3. rallying    50 < value < 150 and above
      4. rebounding  -150 < value < 50 and above
      5. reversing   -150 < value < -50 and below
      6. retracing   value > -50 and below
      7. ranging     -50 < value < 50
      8. unknown     anything else (e.g. exactly 150 above the signal, or 100 equal to it)
    """
    if value is None or signal is None or value != value or signal != signal:  # x != x: NaN
        return UNKNOWN
    if value < -150.0:
        return OVERSOLD
    above, below = value > signal, value < signal
    if above:
        if value > 150.0:
            return OVERBOUGHT
        if 50.0 < value < 150.0:
            return RALLYING
        if -150.0 < value < 50.0:
            return REBOUNDING
    elif below:
        if -150.0 < value < -50.0:
            return REVERSING
        if value > -50.0:
            return RETRACING
    if -50.0 < value < 50.0:
        return RANGING
    return UNKNOWN


def macdv_stages(value: ArrayLike, signal: ArrayLike) -> list[str]:
    return [macdv_stage(v, s) for v, s in zip(_floats(value).tolist(), _floats(signal).tolist())]


class EmaState:
    """Incremental EMA(n); NaN inputs before the first valid one are skipped, as in `ema`."""

    __slots__ = ("alpha", "beta", "n", "seed", "value")

    def __init__(self, n: int, alpha: float | None = None) -> None:
        _check_period(n)
        self.n = n
        self.alpha = 2.0 / (n + 1) if alpha is None else alpha
        self.beta = 1.0 - self.alpha
        self.seed: list[float] | None = []
        self.value = NAN

    @property
    def seeded(self) -> bool:
        return self.seed is None

    def update(self, x: float) -> float:
        if self.seed is None:
            self.value = self.alpha * x + self.beta * self.value
        elif not math.isnan(x) or self.seed:
            self.seed.append(x)
            if len(self.seed) == self.n:
                self.value = math.fsum(self.seed) / self.n
                self.seed = None
        return self.value


class WilderState(EmaState):
    __slots__ = ()

    def __init__(self, n: int) -> None:
        super().__init__(n, alpha=1.0 / n)


class EmaDiffState:
    """Incremental EMA(fast) - EMA(slow), run as the same second-order filter as `ema_diff`."""

    __slots__ = ("a", "b", "fast", "fast_ema", "slow", "slow_ema", "value", "z0", "z1")

    def __init__(self, fast: int, slow: int) -> None:
        self.fast, self.slow = fast, slow
        self.fast_ema: EmaState | None = EmaState(fast)
        self.slow_ema = EmaState(slow)
        self.b, self.a = _diff_filter(fast, slow)
        self.z0 = self.z1 = NAN
        self.value = NAN

    def update(self, x: float) -> float:
        if self.fast_ema is None:
            b, a = self.b, self.a
            y = self.z0 + b[0] * x
            self.z0 = self.z1 + x * b[1] - y * a[1]
            self.z1 = x * b[2] - y * a[2]
            self.value = y
            return y
        e1, e2 = self.fast_ema.update(x), self.slow_ema.update(x)
        self.value = e1 - e2
        if self.fast_ema.seeded and self.slow_ema.seeded:
            self.z0, self.z1 = _diff_state(self.fast, self.slow, e1, e2)
            self.fast_ema = None
        return self.value


class SmaState:
    __slots__ = ("n", "value", "window")

    def __init__(self, n: int) -> None:
        _check_period(n)
        self.n = n
        self.window: deque[float] = deque(maxlen=n)
        self.value = NAN

    def update(self, x: float) -> float:
        self.window.append(x)
        if len(self.window) == self.n:
            self.value = sum(self.window) / self.n
        return self.value


class RsiState:
    __slots__ = ("gain", "loss", "prev", "value")

    def __init__(self, n: int = 14) -> None:
        self.gain = WilderState(n)
        self.loss = WilderState(n)
        self.prev = NAN
        self.value = NAN

    def update(self, close: float) -> float:
        if not math.isnan(self.prev):
            change = close - self.prev
            gain = self.gain.update(max(change, 0.0))
            loss = self.loss.update(max(-change, 0.0))
            if self.gain.seeded:
                total = gain + loss
                self.value = 100.0 * gain / total if total != 0 else 50.0
        self.prev = close
        return self.value


class AtrState:
    """Incremental ATR(n): a synthetic bar adds no true range and leaves the ATR as it was."""

    __slots__ = ("prev_close", "smooth", "value")

    def __init__(self, n: int = 14) -> None:
        self.smooth = WilderState(n)
        self.prev_close = NAN
        self.value = NAN

    def update(self, high: float, low: float, close: float, synthetic: bool = False) -> float:
        if not synthetic:
            prev = self.prev_close
            tr = high - low if math.isnan(prev) else max(high, prev) - min(low, prev)
            self.value = self.smooth.update(tr)
        self.prev_close = close
        return self.value


class MacdState:
    __slots__ = ("diff", "histogram", "sig", "signal", "value")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.diff = EmaDiffState(fast, slow)
        self.sig = EmaState(signal)
        self.value = self.signal = self.histogram = NAN

    def update(self, close: float) -> float:
        self.value = self.diff.update(close)
        self.signal = self.sig.update(self.value)
        self.histogram = self.value - self.signal
        return self.value


class BollingerState:
    __slots__ = ("k", "lower", "middle", "n", "upper", "window")

    def __init__(self, n: int = 20, k: float = 2.0) -> None:
        _check_period(n)
        self.n = n
        self.k = k
        self.window: deque[float] = deque(maxlen=n)
        self.middle = self.upper = self.lower = NAN

    def update(self, close: float) -> float:
        self.window.append(close)
        if len(self.window) == self.n:
            mean = sum(self.window) / self.n
            std = math.sqrt(sum((x - mean) * (x - mean) for x in self.window) / self.n)
            self.middle = mean
            self.upper = mean + self.k * std
            self.lower = mean - self.k * std
        return self.middle


class MacdVState:
    """Incremental MACD-V: feed closed bars in order with `update`; read value, signal, histogram,
    atr, seeded, reason, stage and diagnostics after each."""

    __slots__ = ("atr_", "bars", "diff", "histogram", "real", "sig", "signal", "value")

    def __init__(
        self,
        fast: int = MACDV_FAST,
        slow: int = MACDV_SLOW,
        signal: int = MACDV_SIGNAL,
        atr_period: int = MACDV_ATR,
    ) -> None:
        self.diff = EmaDiffState(fast, slow)
        self.sig = EmaState(signal)
        self.atr_ = AtrState(atr_period)
        self.bars = 0
        self.real: deque[int] = deque(maxlen=DIAGNOSTIC_REAL_BARS)  # indices of the last real bars
        self.value = self.signal = self.histogram = NAN

    def update(self, high: float, low: float, close: float, synthetic: bool = False) -> float:
        if not synthetic:
            self.real.append(self.bars)
        self.bars += 1
        range_ = self.atr_.update(high, low, close, synthetic)
        diff = self.diff.update(close)
        if math.isnan(diff) or math.isnan(range_):
            return NAN
        value = diff / range_ * 100.0 if range_ != 0 else 0.0
        self.value = value
        self.signal = signal = self.sig.update(value)
        self.histogram = value - signal
        return value

    @property
    def atr(self) -> float:
        return self.atr_.value

    @property
    def seeded(self) -> bool:
        return not math.isnan(self.value)

    @property
    def reason(self) -> str | None:
        return None if self.seeded else LOW_TRADING_ACTIVITY

    @property
    def stage(self) -> str:
        return macdv_stage(self.value, self.signal)

    @property
    def diagnostics(self) -> Diagnostics:
        real = self.real
        if not real:
            return Diagnostics(n_eff=0, span=0)
        return Diagnostics(n_eff=len(real), span=real[-1] - real[0] + 1)


@dataclass(frozen=True, slots=True)
class Series:
    """One named indicator's history in the stored shape: value, and signal/histogram where it has them."""

    value: FloatArray
    signal: FloatArray | None = None
    histogram: FloatArray | None = None
    reason: str | None = None  # why the last bar has no value, when it has none
    diagnostics: Diagnostics | None = None  # MACD-V's, of the last bar

    @property
    def seeded(self) -> bool:
        return bool(self.value.size) and not math.isnan(self.value[-1])


@dataclass(frozen=True, slots=True)
class History:
    high: FloatArray
    low: FloatArray
    close: FloatArray
    synthetic: NDArray[np.bool_]


def _macd_series(h: History) -> Series:
    m = macd(h.close)
    return Series(m.macd, m.signal, m.histogram)


def _macdv_series(h: History) -> Series:
    m = macdv(h.high, h.low, h.close, h.synthetic)
    return Series(m.value, m.signal, m.histogram, reason=m.reason, diagnostics=m.diagnostics)


def _atr_series(n: int) -> Callable[[History], Series]:
    def compute(h: History) -> Series:
        value = atr(h.high, h.low, h.close, n, h.synthetic)
        real_bars = h.close.size - int(h.synthetic.sum())
        unseeded = not value.size or math.isnan(value[-1])
        return Series(value, reason=unseeded_reason(h.close.size, real_bars, n, n) if unseeded else None)

    return compute


# The indicators computed on every closed bar and stored, by name.
INDICATORS: dict[str, Callable[[History], Series]] = {
    "macdv": _macdv_series,
    "macd": _macd_series,
    "ema12": lambda h: Series(ema(h.close, 12)),
    "ema26": lambda h: Series(ema(h.close, 26)),
    "sma20": lambda h: Series(sma(h.close, 20)),
    "rsi14": lambda h: Series(rsi(h.close, 14)),
    "atr14": _atr_series(14),
    "atr26": _atr_series(26),
    "bb20_upper": lambda h: Series(bollinger(h.close, 20).upper),
    "bb20_lower": lambda h: Series(bollinger(h.close, 20).lower),
}
INDICATOR_NAMES = tuple(INDICATORS)
