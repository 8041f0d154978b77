"""The signals grid: each instrument's MACD-V stage on the six timeframes and its bias. No Django.

The stage and the bias are the alerts engine's own (`indicators.macdv_stage`, `rules.bias`), applied to
the values stored on each (symbol, timeframe)'s latest closed bar that has one. A cell without a seeded
value and signal says why, with the engine's reasons where the stored bars tell them.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from alerts import rules
from alerts.indicators import (
    LOW_TRADING_ACTIVITY,
    MACDV_ATR,
    MACDV_SLOW,
    MACDV_STAGES,
    NOT_ENOUGH_BARS,
    macdv_stage,
    unseeded_reason,
)

TIMEFRAMES = tuple(rules.TIMEFRAME_WEIGHTS)  # 1m 5m 15m 1h 4h 1d
STAGES = MACDV_STAGES  # the engine's eight labels, "unknown" included
BIASES = (rules.BULLISH, rules.BEARISH, rules.NEUTRAL)
# Stored bars counted back from the latest: enough to tell "not enough bars" from "low activity".
BARS_NEEDED = max(MACDV_ATR, MACDV_SLOW)
NO_BARS = "No closed bars"
NOT_COMPUTED = "Indicators not computed yet"
REASONS = (NO_BARS, NOT_ENOUGH_BARS, LOW_TRADING_ACTIVITY, NOT_COMPUTED)


@dataclass(frozen=True, slots=True)
class Frame:
    """What is stored for one (symbol, timeframe): the latest MACD-V row, and when there is none, the
    closed bars counted back from the latest (at most BARS_NEEDED) and the bars they span, gaps included."""

    symbol: str
    timeframe: str
    start: datetime | None = None
    value: Decimal | None = None
    signal: Decimal | None = None
    histogram: Decimal | None = None
    real_bars: int = 0
    span_bars: int = 0


@dataclass(frozen=True, slots=True)
class Signal:
    symbol: str
    timeframe: str
    value: Decimal | None
    signal: Decimal | None
    histogram: Decimal | None
    stage: str
    bias: str
    seeded: bool
    reason: str | None
    as_of: datetime | None


def frame_stage(frame: Frame) -> str:
    """The engine's stage; a value without its signal is "unknown" (neither above nor below it)."""
    return macdv_stage(
        None if frame.value is None else float(frame.value),
        None if frame.signal is None else float(frame.signal),
    )


def frame_reason(frame: Frame) -> str | None:
    """None when the value and its signal are seeded; else why not."""
    if frame.value is not None:
        return None if frame.signal is not None else NOT_ENOUGH_BARS  # the signal needs more bars
    if frame.real_bars == 0:
        return NO_BARS
    if frame.real_bars >= BARS_NEEDED:
        return NOT_COMPUTED  # enough bars, no stored value: their bar-close jobs have not run
    return unseeded_reason(frame.span_bars, frame.real_bars, MACDV_ATR, MACDV_SLOW)


def symbol_bias(frames: Iterable[Frame]) -> str:
    return rules.bias(
        {
            f.timeframe: None
            if f.value is None
            else (float(f.value), None if f.signal is None else float(f.signal))
            for f in frames
        }
    )


def signals_from_frames(frames: Iterable[Frame]) -> list[Signal]:
    """One Signal per frame, in the given order; the bias is over each symbol's frames."""
    frames = list(frames)
    by_symbol: dict[str, list[Frame]] = {}
    for frame in frames:
        by_symbol.setdefault(frame.symbol, []).append(frame)
    biases = {symbol: symbol_bias(group) for symbol, group in by_symbol.items()}
    return [
        Signal(
            symbol=f.symbol,
            timeframe=f.timeframe,
            value=f.value,
            signal=f.signal,
            histogram=f.histogram,
            stage=frame_stage(f),
            bias=biases[f.symbol],
            seeded=f.value is not None and f.signal is not None,
            reason=frame_reason(f),
            as_of=f.start,
        )
        for f in frames
    ]
