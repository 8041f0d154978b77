"""Alert rule evaluation. Pure Python, no Django: the services load rules and state from the database,
call these functions, and store what they changed.

Prices are compared as Decimal, exactly: the bar's open/high/low/close, the quote's mid and the
thresholds, amounts and percentages of rules on them (`Rule.exact`). Indicator values are floats
(numpy computes them) and so are the thresholds of rules on indicators. A Decimal compared with a
float compares exactly too (Python converts the float losslessly).
Times are UTC epoch seconds.

Where a rule is evaluated (the conditions and frequencies, as TradingView defines them: docs/alerts.md):
- on quotes (`evaluate_quote`): price rules against constant levels with any frequency but once per
  bar close, except "moving", which compares with closed bars and so is a bar-close rule;
- on candle close (`evaluate_bar_close`): every other rule, including the MACD-V preset.

MACD-V bias of a symbol, as the replaced Livermore monitor computed it: each timeframe's MACD-V stage
(`indicators.macdv_stage`, the StockCharts range rules) counts as bullish (oversold, rebounding,
rallying), bearish (overbought, retracing, reversing) or neither (ranging, unknown), weighted 1m 1,
5m 2, 15m 3, 1h 4, 4h 5, 1d 6. Bullish when the bullish weight exceeds 1.5 x the bearish weight,
Bearish the other way round, else Neutral (so also when nothing is known).
"""

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from alerts.indicators import BEARISH_STAGES, BULLISH_STAGES, INDICATOR_NAMES, Diagnostics, macdv_stage
from marketdata.bars import TIMEFRAME_SECONDS


class Kind(StrEnum):
    CONDITION = "condition"
    MACDV = "macdv"


class Condition(StrEnum):
    """TradingView's alert operators (docs/alerts.md has the definitions)."""

    CROSSING = "crossing"
    CROSSING_UP = "crossing_up"
    CROSSING_DOWN = "crossing_down"
    GREATER_THAN = "greater_than"
    LESS_THAN = "less_than"
    ENTERING_CHANNEL = "entering_channel"
    EXITING_CHANNEL = "exiting_channel"
    INSIDE_CHANNEL = "inside_channel"
    OUTSIDE_CHANNEL = "outside_channel"
    MOVING_UP = "moving_up"
    MOVING_DOWN = "moving_down"
    MOVING_UP_PCT = "moving_up_pct"
    MOVING_DOWN_PCT = "moving_down_pct"


class Frequency(StrEnum):
    ONCE = "once"
    ONCE_PER_BAR = "once_per_bar"
    ONCE_PER_BAR_CLOSE = "once_per_bar_close"
    ONCE_PER_MINUTE = "once_per_minute"
    EVERY_TIME = "every_time"


class Gate(StrEnum):
    """What the frequency and the flood stop make of a met condition (`gate`)."""

    FIRE = "fire"
    SKIP = "skip"
    STOP = "stop"  # the firing would be one too many: the rule stops and its owner is told


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NEUTRAL = "neutral"


# The members the evaluators test on each rule, as globals: on Python 3.11 reading a member off its
# enum class costs ~0.2 us, ten times a global, and a bar close tests thousands of rules.
_ONCE, _ONCE_PER_BAR, _ONCE_PER_BAR_CLOSE, _ONCE_PER_MINUTE = (
    Frequency.ONCE,
    Frequency.ONCE_PER_BAR,
    Frequency.ONCE_PER_BAR_CLOSE,
    Frequency.ONCE_PER_MINUTE,
)
_FIRE, _SKIP, _STOP = Gate.FIRE, Gate.SKIP, Gate.STOP
_UP, _DOWN = Direction.UP, Direction.DOWN
_DIRECTIONS = tuple(Direction)
_DIRECTION_CODES = {direction: code for code, direction in enumerate(_DIRECTIONS)}
_CROSSING, _CROSSING_UP, _CROSSING_DOWN = Condition.CROSSING, Condition.CROSSING_UP, Condition.CROSSING_DOWN
_GREATER_THAN, _LESS_THAN = Condition.GREATER_THAN, Condition.LESS_THAN
_INSIDE_CHANNEL, _OUTSIDE_CHANNEL = Condition.INSIDE_CHANNEL, Condition.OUTSIDE_CHANNEL
_ENTERING_CHANNEL = Condition.ENTERING_CHANNEL
_MOVING_UP, _MOVING_DOWN = Condition.MOVING_UP, Condition.MOVING_DOWN
_MOVING_UP_PCT, _MOVING_DOWN_PCT = Condition.MOVING_UP_PCT, Condition.MOVING_DOWN_PCT
_ZERO = Decimal(0)
# Firing labels by condition: an enum member's `.value` is a property, ~20 times a dict look-up
_LABELS = {condition: condition.value for condition in Condition}

PRICE = "price"  # the bar close at candle close, the mid on quotes
CLOSE = "close"
PRICE_KEYS = frozenset({"open", "high", "low", CLOSE})  # Decimal values, compared exactly
MACDV = "macdv"
MACDV_SIGNAL = "macdv_signal"
MACDV_HISTOGRAM = "macdv_histogram"
MACDV_N_EFF = "macdv_n_eff"  # kept with a series' values for the alerts' payload; no rule reads them
MACDV_SPAN = "macdv_span"
MACDV_LEVELS = (150, 200, 250, 300, 350, 400)
MACDV_REVERSAL_LEVEL = 150.0
OVERSOLD_REVERSAL_HIST = 0.05  # histogram above 5% of |MACD-V|
OVERBOUGHT_REVERSAL_HIST = 0.03  # histogram below -3% of |MACD-V|
MACDV_COOLDOWN_S = 300.0
TIMEFRAME_WEIGHTS = {"1m": 1, "5m": 2, "15m": 3, "1h": 4, "4h": 5, "1d": 6}
BIAS_RATIO = 1.5
MAX_BARS = 500  # longest "moving over N bars" window
MINUTE_S = 60.0  # once per minute: at most one firing in any 60 s
# TradingView stops an alert that triggers more than 15 times within 3 minutes.
FLOOD_MAX = 15
FLOOD_WINDOW_S = 180.0
STOPPED = "stopped"  # label prefix of the notice that a rule was stopped
CHART_BARS = 120  # bars of OHLCV and MACD-V kept per series for the chart
CHART_KEYS = ("open", "high", "low", CLOSE, "volume", MACDV, MACDV_SIGNAL, MACDV_HISTOGRAM)

CHANNEL_CONDITIONS = frozenset(
    {
        Condition.ENTERING_CHANNEL,
        Condition.EXITING_CHANNEL,
        Condition.INSIDE_CHANNEL,
        Condition.OUTSIDE_CHANNEL,
    }
)
PERCENT_CONDITIONS = frozenset({Condition.MOVING_UP_PCT, Condition.MOVING_DOWN_PCT})
MOVING_CONDITIONS = frozenset({Condition.MOVING_UP, Condition.MOVING_DOWN}) | PERCENT_CONDITIONS
# Every series a rule may read on a closed bar: the bar itself and each indicator the bar-close path
# computes, with `_signal` / `_histogram` where the indicator has them (see services.bar_close_values).
SERIES = frozenset(
    {"price", "open", "high", "low", "close", "volume"}
    | {f"{name}{suffix}" for name in INDICATOR_NAMES for suffix in ("", "_signal", "_histogram")}
)

CONDITION_TEXT = {
    Condition.CROSSING: "crossed",  # the title says which way it went (`_title`)
    Condition.CROSSING_UP: "crossed above",
    Condition.CROSSING_DOWN: "crossed below",
    Condition.GREATER_THAN: "is above",
    Condition.LESS_THAN: "is below",
    Condition.ENTERING_CHANNEL: "entered channel",
    Condition.EXITING_CHANNEL: "exited channel",
    Condition.INSIDE_CHANNEL: "is inside channel",
    Condition.OUTSIDE_CHANNEL: "is outside channel",
    Condition.MOVING_UP: "moved up",
    Condition.MOVING_DOWN: "moved down",
    Condition.MOVING_UP_PCT: "moved up",
    Condition.MOVING_DOWN_PCT: "moved down",
}
CONDITION_DIRECTION = {
    Condition.CROSSING: Direction.NEUTRAL,  # up or down as it went (`_condition_firing`)
    Condition.CROSSING_UP: Direction.UP,
    Condition.CROSSING_DOWN: Direction.DOWN,
    Condition.GREATER_THAN: Direction.UP,
    Condition.LESS_THAN: Direction.DOWN,
    Condition.ENTERING_CHANNEL: Direction.NEUTRAL,
    Condition.EXITING_CHANNEL: Direction.NEUTRAL,
    Condition.INSIDE_CHANNEL: Direction.NEUTRAL,
    Condition.OUTSIDE_CHANNEL: Direction.NEUTRAL,
    Condition.MOVING_UP: Direction.UP,
    Condition.MOVING_DOWN: Direction.DOWN,
    Condition.MOVING_UP_PCT: Direction.UP,
    Condition.MOVING_DOWN_PCT: Direction.DOWN,
}


Value = float | Decimal  # Decimal for prices (PRICE_KEYS), float for indicators


def num(x: Value) -> str:
    """A level as people write it: 150, -1.085, 0.5."""
    if isinstance(x, Decimal):
        return f"{x.normalize():f}"
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _value(x: Value, exact: bool) -> Value:
    if not exact:
        return float(x)
    if isinstance(x, Decimal):
        return x
    return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)


def source_label(source: str) -> str:
    if source == PRICE:
        return "Price"
    if source == MACDV:
        return "MACD-V"
    return source.upper().replace("_", " ")


def validate_spec(
    *,
    kind: str,
    source: str,
    condition: str,
    threshold: Value | None,
    upper: Value | None,
    other: str,
    bars: int,
    frequency: str,
) -> dict[str, list[str]]:
    """Field errors of a rule definition (empty when valid). Shared by the API, the admin and services."""
    errors: dict[str, list[str]] = {}

    def err(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    if kind not in Kind.__members__.values():
        err("kind", f"Must be one of {', '.join(Kind)}.")
        return errors
    if frequency not in Frequency.__members__.values():
        err("frequency", f"Must be one of {', '.join(Frequency)}.")
    if kind == Kind.MACDV:
        return errors
    if condition not in Condition.__members__.values():
        err("condition", f"Must be one of {', '.join(Condition)}.")
        return errors
    for name, series in (("source", source), ("other", other)):
        if series and series not in SERIES:
            err(name, f"Unknown series {series!r}: one of {', '.join(sorted(SERIES))}.")
    if not source:
        err("source", "Required.")
    if other and (condition in CHANNEL_CONDITIONS or condition in MOVING_CONDITIONS):
        err("other", "Channel and moving conditions compare with constants, not another series.")
    if not other and threshold is None:
        err("threshold", "Required (or compare with another series in 'other').")
    if threshold is not None and not math.isfinite(threshold):
        err("threshold", "Must be a finite number.")
    if condition in CHANNEL_CONDITIONS:
        if upper is None or not math.isfinite(upper):
            err("upper", "A channel needs its upper bound.")
        elif threshold is not None and upper <= threshold:
            err("upper", "Must be above the lower bound (threshold).")
    elif upper is not None:
        err("upper", "Only channel conditions have an upper bound.")
    if condition in MOVING_CONDITIONS:
        if not 1 <= bars <= MAX_BARS:
            err("bars", f"Must be between 1 and {MAX_BARS}.")
        if threshold is not None and threshold <= 0:
            what = "percentage" if condition in PERCENT_CONDITIONS else "amount"
            err("threshold", f"The {what} must be positive.")
    elif bars != 1:
        err("bars", "Only moving conditions look back over bars.")
    return errors


def expiry_errors(*, expires_at: float | None, now: float) -> dict[str, list[str]]:
    """A rule being created, or given a new expiry, must expire in the future (epoch seconds)."""
    if expires_at is not None and expires_at <= now:
        return {"expires_at": ["Must be in the future."]}
    return {}


def is_live(*, kind: str, source: str, condition: str, other: str, frequency: str) -> bool:
    """Evaluated on every quote (True) or on candle close (False)."""
    return (
        kind == Kind.CONDITION
        and source == PRICE
        and not other
        and frequency != Frequency.ONCE_PER_BAR_CLOSE
        and condition not in MOVING_CONDITIONS
    )


@dataclass(slots=True)
class RuleState:
    """What a rule remembers between evaluations; stored with the rule so a restart forgets nothing."""

    done: bool = False  # a "once" rule that fired
    stopped: bool = False  # fired too often (`gate`): evaluated no more until its owner resets it
    last_bar: int | None = None  # bar start of the last firing (once per bar)
    last_ts: float | None = None  # time of the last firing (once per minute)
    recent: list[float] = field(default_factory=list)  # times of its last quote firings (flood stop)
    latch_oversold: bool = False  # MACD-V reversals: fired, latched until the next level crossing
    latch_overbought: bool = False
    cooldowns: dict[str, float] = field(default_factory=dict)  # MACD-V label -> time it last fired

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "stopped": self.stopped,
            "last_bar": self.last_bar,
            "last_ts": self.last_ts,
            "recent": list(self.recent),
            "latch_oversold": self.latch_oversold,
            "latch_overbought": self.latch_overbought,
            "cooldowns": dict(self.cooldowns),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "RuleState":
        data = data or {}
        return cls(
            done=bool(data.get("done", False)),
            stopped=bool(data.get("stopped", False)),
            last_bar=data.get("last_bar"),
            last_ts=data.get("last_ts"),
            recent=[float(t) for t in data.get("recent") or ()],
            latch_oversold=bool(data.get("latch_oversold", False)),
            latch_overbought=bool(data.get("latch_overbought", False)),
            cooldowns={str(k): float(v) for k, v in (data.get("cooldowns") or {}).items()},
        )

    def merged(self, other: "RuleState") -> "RuleState":
        """The progress either copy of one rule's state has made (the quote listener's in-memory
        copy and the stored one): what fired in one has fired."""
        return RuleState(
            done=self.done or other.done,
            stopped=self.stopped or other.stopped,
            last_bar=max(self.last_bar or 0, other.last_bar or 0) or None,
            last_ts=max(self.last_ts or 0.0, other.last_ts or 0.0) or None,
            recent=sorted(set(self.recent) | set(other.recent))[-FLOOD_MAX:],
            latch_oversold=self.latch_oversold or other.latch_oversold,
            latch_overbought=self.latch_overbought or other.latch_overbought,
            cooldowns={**other.cooldowns, **self.cooldowns},
        )


@dataclass(slots=True)
class Rule:
    id: int
    symbol: str
    timeframe: str
    kind: Kind = Kind.CONDITION
    source: str = PRICE
    condition: Condition | None = None
    threshold: Value | None = None
    upper: Value | None = None
    other: str = ""
    bars: int = 1
    frequency: Frequency = Frequency.ONCE_PER_BAR_CLOSE
    expires_at: float | None = None
    state: RuleState = field(default_factory=RuleState)
    version: str = ""  # changes when its owner edits the rule (the stored row's updated_at)
    live: bool = field(init=False)
    key: str = field(init=False)  # the values key of `source` ("price" is the bar's close)
    other_key: str = field(init=False)
    moving: bool = field(init=False)
    exact: bool = field(init=False)  # a price compared with price levels or moves: Decimal thresholds
    titles: dict[Direction, str] = field(init=False, repr=False, compare=False)  # made once each

    def __post_init__(self) -> None:
        self.titles = {}
        self.moving = self.condition in MOVING_CONDITIONS
        self.key = CLOSE if self.source == PRICE else self.source
        self.other_key = CLOSE if self.other == PRICE else self.other
        self.exact = self.key in PRICE_KEYS
        if self.threshold is not None:
            self.threshold = _value(self.threshold, self.exact)
        if self.upper is not None:
            self.upper = _value(self.upper, self.exact)
        self.live = is_live(
            kind=self.kind,
            source=self.source,
            condition=self.condition or "",
            other=self.other,
            frequency=self.frequency,
        )


@dataclass(slots=True)
class SeriesState:
    """The last evaluated bar of one (symbol, timeframe) and a short history, oldest first."""

    symbol: str
    timeframe: str
    bar_start: int | None = None
    values: dict[str, Value] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    history: dict[str, list[float | None]] = field(default_factory=dict)

    def past(self, key: str, bars: int) -> float | None:
        """The value `bars` bars before the bar being evaluated (history excludes that bar)."""
        column = self.history.get(key)
        if column is None or len(column) < bars:
            return None
        return column[-bars]

    def advance(self, bar_start: int, values: Mapping[str, Value], depth: int, keys: Iterable[str]) -> None:
        """Appends the evaluated bar; every history column stays as long as `starts`. The history
        (moving %, charts) holds floats; `values` (what crossings compare with) keeps Decimal prices."""
        keep = min(len(self.starts), depth - 1)  # bars of the history that stay
        history: dict[str, list[float | None]] = {}
        for key in keys:
            column = self.history.get(key, [])[-keep:] if keep else []  # a new list: one copy
            if len(column) < keep:
                column = [*([None] * (keep - len(column))), *column]
            value = values.get(key)
            column.append(None if value is None else float(value))
            history[key] = column
        self.starts = [*self.starts, bar_start][-depth:]
        self.bar_start = bar_start
        self.values = {**self.values, **values}  # a key missing from one bar keeps its last value
        self.history = history

    def to_json(self) -> dict[str, Any]:
        return {"starts": self.starts, "history": self.history}

    def values_to_json(self) -> dict[str, float | str]:
        """Decimal prices as strings, so they come back exact (`values_from_json`)."""
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in self.values.items()}

    @staticmethod
    def values_from_json(data: Mapping[str, float | str]) -> dict[str, Value]:
        return {k: Decimal(v) if isinstance(v, str) else float(v) for k, v in data.items()}


class Firing(NamedTuple):
    """What fired, a value (`_replace` makes a changed copy): the quote path's firings, and a bar
    close's one by one (`Firings`). A tuple, built with `tuple.__new__`: twice as fast as a slotted
    dataclass's `__init__` (or the named tuple's own `__new__`, which handles keywords and defaults)."""

    rule_id: int
    symbol: str
    timeframe: str
    bar_start: int
    label: str  # unique per rule and bar: what fired
    title: str
    value: Value
    direction: Direction
    ts: float  # when it fired
    # One firing too many (the flood stop): recorded as `stop_notice(self)`, the rule stopped.
    stop: bool = False


_tuple_new = tuple.__new__
_new_firing = partial(_tuple_new, Firing)
# A firing's fields in `Firing`'s order, as a plain tuple (what `Firings.rows` yields)
FiringRow = tuple[int, str, str, int, str, str, Value, Direction, float, bool]


@dataclass(frozen=True, slots=True)
class Firings:
    """The firings of one bar close, column-wise, in the rules' order: a bar close can fire thousands
    of rules, and the bar-close service stores them from the columns (`rows`) without a `Firing`
    per firing. Iterating gives the `Firing`s. Bar-close firings never stop their rule (`gate`)."""

    symbol: str
    timeframe: str
    bar_start: int
    ts: float  # the bar's close
    rule_ids: list[int]
    labels: list[str]
    titles: list[str]
    values: list[Value]
    directions: list[Direction]

    def __len__(self) -> int:
        return len(self.rule_ids)

    def rows(self) -> Iterator[FiringRow]:
        """Each firing's fields, zipped from the columns (zip reuses its tuple when the caller
        unpacks it and keeps none)."""
        return zip(
            self.rule_ids,
            repeat(self.symbol),
            repeat(self.timeframe),
            repeat(self.bar_start),
            self.labels,
            self.titles,
            self.values,
            self.directions,
            repeat(self.ts),
            repeat(False),
        )

    def __iter__(self) -> Iterator[Firing]:
        return map(_new_firing, self.rows())


def _objects(items: Sequence[Any]) -> NDArray[np.object_]:
    """The objects themselves in a one-dimensional numpy array, so that gathering them by position
    (and `tolist`) runs in C and makes no new objects."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _finite(values: Mapping[str, Any]) -> dict[str, Value]:
    """The finite values: prices as Decimal, everything else as float."""
    out: dict[str, Value] = {}
    for k, v in values.items():
        if v is None:
            continue
        if k in PRICE_KEYS:
            d = _value(v, True)
            if d.is_finite():  # type: ignore[union-attr]
                out[k] = d
            continue
        f = float(v)
        if math.isfinite(f):
            out[k] = f
    return out


def _met(
    condition: Condition,
    prev: Value | None,
    curr: Value,
    lo_prev: Value,
    lo: Value,
    hi: Value | None,
    past: Value | None,
) -> bool:
    """Whether the condition holds (docs/alerts.md). `prev`/`lo_prev`: the series and the level one
    evaluation earlier (None: no earlier one); `hi`: a channel's upper bound; `past`: the series
    `bars` bars back (moving conditions), a Decimal when `curr` is a price."""
    if condition is Condition.CROSSING_UP:
        return prev is not None and prev < lo_prev and curr >= lo
    if condition is Condition.CROSSING_DOWN:
        return prev is not None and prev > lo_prev and curr <= lo
    if condition is Condition.CROSSING:
        return prev is not None and ((prev < lo_prev and curr >= lo) or (prev > lo_prev and curr <= lo))
    if condition is Condition.GREATER_THAN:
        return curr > lo
    if condition is Condition.LESS_THAN:
        return curr < lo
    if condition in CHANNEL_CONDITIONS:
        inside = lo <= curr <= hi  # type: ignore[operator]
        if condition is Condition.INSIDE_CHANNEL:
            return inside
        if condition is Condition.OUTSIDE_CHANNEL:
            return not inside
        if prev is None:
            return False
        was_inside = lo <= prev <= hi  # type: ignore[operator]
        return (
            inside and not was_inside
            if condition is Condition.ENTERING_CHANNEL
            else was_inside and not inside
        )
    if past is None:
        return False
    change = curr - past  # type: ignore[operator]
    if condition is Condition.MOVING_UP:
        return change >= lo
    if condition is Condition.MOVING_DOWN:
        return -change >= lo
    if past == 0:
        return False
    # change / |past| * 100 >= lo, without the division's rounding
    scaled, base = change * 100, lo * abs(past)  # type: ignore[operator]
    return scaled >= base if condition is Condition.MOVING_UP_PCT else -scaled >= base


def _level_target(rule: Rule) -> str:
    return num(rule.threshold or 0)


def _channel_target(rule: Rule) -> str:
    return f"{num(rule.threshold or 0)}..{num(rule.upper or 0)}"


def _percent_target(rule: Rule) -> str:
    return f"{num(rule.threshold or 0)}% over {rule.bars} bars"


def _moving_target(rule: Rule) -> str:
    return f"{num(rule.threshold or 0)} over {rule.bars} bars"


# What a title names as the target of a rule against a constant, by condition: one look-up per title
_TARGETS = {
    condition: _channel_target
    if condition in CHANNEL_CONDITIONS
    else _percent_target
    if condition in PERCENT_CONDITIONS
    else _moving_target
    if condition in MOVING_CONDITIONS
    else _level_target
    for condition in Condition
}


def _title(rule: Rule, direction: Direction) -> str:
    """The title of a condition rule's firings in `direction`."""
    condition: Condition = rule.condition  # type: ignore[assignment]
    target = source_label(rule.other) if rule.other else _TARGETS[condition](rule)
    if condition is _CROSSING:
        text = "crossed above" if direction is _UP else "crossed below"
    else:
        text = CONDITION_TEXT[condition]
    return f"{rule.symbol}: {source_label(rule.source)} {text} {target} ({rule.timeframe})"


def _direction(condition: Condition, rising: bool) -> Direction:
    """A firing's direction; `rising`: a crossing (either way) came from below."""
    if condition is _CROSSING:
        return _UP if rising else _DOWN
    return CONDITION_DIRECTION[condition]


def _condition_firing(
    rule: Rule, direction: Direction, bar_start: int, label: str, value: Value, ts: float, gate: Gate
) -> Firing:
    """The firing; flagged `stop` when the flood stop stopped the rule with it."""
    title = rule.titles.get(direction) or _condition_title(rule, direction)
    return _tuple_new(
        Firing,
        (rule.id, rule.symbol, rule.timeframe, bar_start, label, title, value, direction, ts, gate is _STOP),
    )


def _condition_title(rule: Rule, direction: Direction) -> str:
    """Makes the title of a condition rule's firings in `direction` and keeps it in `rule.titles`,
    which callers read first."""
    title = rule.titles[direction] = _title(rule, direction)
    return title


def stop_notice(firing: Firing) -> Firing:
    """What the owner is told instead of the firing that was one too many: the rule stopped. Made
    when the firing is recorded, so the service that re-checks a live firing against the stored
    state can still record it as a plain firing when that state disagrees."""
    return firing._replace(
        label=f"{STOPPED}@{round(firing.ts * 1000)}",
        title=f"Alert stopped, triggered more than {FLOOD_MAX} times in 3 minutes: {firing.title}",
        direction=Direction.NEUTRAL,
    )


def gate(state: RuleState, frequency: Frequency, bar_start: int, ts: float, counted: bool = True) -> Gate:
    """Applies the frequency (`_admit`), then the flood stop, to a condition met at `ts` (epoch s) in
    the bar starting at `bar_start`, and records the firing in the state. Shared by the quote
    evaluator and by the service that re-checks the quote listener's firings under the rule's row lock.

    `counted`: the firing counts toward the flood stop. Bar-close firings are not counted (the bar-close
    evaluator applies the frequency alone): a rule fires at most once per bar there, and bars are a
    minute long at least, so it cannot fire more than 3 times in 3 minutes (and its state does not
    change with every firing)."""
    if not _admit(state, frequency, bar_start, ts):
        return _SKIP
    if counted:
        recent = state.recent
        if len(recent) >= FLOOD_MAX:  # only then can the window hold too many (keeps it short)
            recent = state.recent = [t for t in recent if ts - t < FLOOD_WINDOW_S]
            if len(recent) >= FLOOD_MAX:
                state.stopped = True
                return _STOP
        recent.append(ts)
    return _FIRE


def _admit(state: RuleState, frequency: Frequency, bar_start: int, ts: float) -> bool:
    """Whether the frequency lets a condition met at `ts` (epoch s) in the bar starting at `bar_start`
    fire; if so, records the firing in the state. The bar-close evaluator's part of `gate`."""
    if frequency is _ONCE:
        state.done = True
    elif frequency is _ONCE_PER_BAR or frequency is _ONCE_PER_BAR_CLOSE:
        if state.last_bar is not None and state.last_bar >= bar_start:
            return False
        state.last_bar = bar_start
    elif frequency is _ONCE_PER_MINUTE:
        if state.last_ts is not None and ts - state.last_ts < MINUTE_S:
            return False
        state.last_ts = ts
    return True


# What `_admit` does with each frequency, as a code per rule (`RuleIndex.admission`)
_ANY, _FIRST, _PER_BAR, _PER_MINUTE = range(4)
_ADMISSION = {
    Frequency.EVERY_TIME: _ANY,
    Frequency.ONCE: _FIRST,
    Frequency.ONCE_PER_BAR: _PER_BAR,
    Frequency.ONCE_PER_BAR_CLOSE: _PER_BAR,
    Frequency.ONCE_PER_MINUTE: _PER_MINUTE,
}


_NONE = np.empty(0, dtype=np.intp)  # no positions
_NONE.flags.writeable = False


class _Levels:
    """Rules' levels in ascending order with their positions in the rule list (and, for channels, the
    other bound of each), so that the rules whose level lies in a range are one slice. The levels are
    a list (bisected with Python's comparisons); the positions and bounds numpy arrays, so that a
    slice is a view and the bounds of a slice are compared at once: as float64 when they are floats
    (numpy compares doubles as Python does), else as the Decimals themselves (an object array
    compares each pair with Python's comparison, exactly)."""

    __slots__ = ("bounds", "levels", "positions")

    def __init__(self, items: list[tuple[Value, int, Value]]) -> None:
        items.sort(key=lambda item: item[0])  # stable: equal levels keep the rules' order
        self.levels = [level for level, _, _ in items]
        self.positions = np.array([position for _, position, _ in items], dtype=np.intp)
        bounds = [bound for _, _, bound in items]
        exact = any(isinstance(bound, Decimal) for bound in bounds)
        self.bounds = _objects(bounds) if exact else np.array(bounds, dtype=np.float64)


def _levels(groups: dict[Any, list[tuple[Value, int, Value]]]) -> dict[Any, _Levels]:
    return {name: _Levels(items) for name, items in groups.items()}


class RuleIndex:
    """The bar-close rules of one (symbol, timeframe), compiled once so that a bar close visits only
    the rules whose condition it meets (`evaluate_bar_close`).

    Rules on a series against constant levels are kept by series and condition with their levels
    sorted: a crossing is met by the levels between the previous and the current value, "greater
    than" by those below the value, a channel condition by the channels whose bounds lie on the right
    sides of the two values; each is a slice found by bisection. Moving conditions are kept by
    (series, condition) in arrays of windows, amounts and positions: the value of each window back
    and the moves from it are computed once per series (`_back`), and each rule compares its
    window's move with its amount all at once (`_Moves`), element by element as `_met` does. Rules
    comparing two series are grouped by everything `_met` reads, so each group is one comparison.
    MACD-V presets are visited only on a bar where a level is crossed or a reversal shows. Levels
    compare exactly as in `_met` (Decimal prices, Decimal with float compares exactly), and rounded
    arithmetic is monotonic, so a slice holds exactly the rules `_met` accepts. Channel rules must
    have lower < upper, moving rules 1 to MAX_BARS bars (`validate_spec`).

    What the state checks and the frequency (`_admit`) read of each rule's state is kept in arrays by
    position as well, so the rules a bar meets are let through or held back all at once (`admit`).
    The index owns its rules' states from when it is built: `admit` records each firing in the
    arrays and in the rule's `RuleState`; a state changed elsewhere counts once the index is built
    again (as the bar-close service does when another process evaluated the series)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.depth = CHART_BARS
        self.moving_keys: set[str] = set()
        self.macdv: list[int] = []
        pairs: dict[tuple[Any, ...], list[int]] = {}
        levels: dict[tuple[str, Condition], list[tuple[Value, int, Value]]] = {}
        uppers: dict[tuple[str, Condition], list[tuple[Value, int, Value]]] = {}
        moves: dict[tuple[str, Condition], list[tuple[int, Value, int]]] = {}
        for position, rule in enumerate(self.rules):
            condition, threshold, upper = rule.condition, rule.threshold, rule.upper
            if rule.moving:
                self.depth = max(self.depth, rule.bars + 1)
                self.moving_keys.add(rule.key)
            if rule.live:
                continue
            if rule.kind is Kind.MACDV:
                self.macdv.append(position)
            elif (
                condition is None
                or rule.other
                or threshold is None
                or (condition in CHANNEL_CONDITIONS and upper is None)
            ):
                bars = rule.bars if rule.moving else 0
                level = None if rule.other else threshold  # against another series: not read
                group = (rule.key, rule.other_key, condition, level, upper, bars)
                pairs.setdefault(group, []).append(position)
            elif rule.moving:
                moves.setdefault((rule.key, condition), []).append((rule.bars, threshold, position))
            elif upper is not None:
                levels.setdefault((rule.key, condition), []).append((threshold, position, upper))
                uppers.setdefault((rule.key, condition), []).append((upper, position, threshold))
            else:
                levels.setdefault((rule.key, condition), []).append((threshold, position, threshold))
        self.pairs = {group: np.array(positions, dtype=np.intp) for group, positions in pairs.items()}
        self.levels = _levels(levels)
        self.uppers = _levels(uppers)
        self.moves: dict[str, list[_Moves]] = {}
        for (key, condition), items in moves.items():
            self.moves.setdefault(key, []).append(_Moves(condition, items))
        self.ids = _objects([rule.id for rule in self.rules])
        # Firing titles (None until made), made on a rule's first firing in each direction (`titles_of`)
        self.titles = np.empty(len(_DIRECTIONS) * len(self.rules), dtype=object)
        self.titled = np.zeros(len(self.titles), dtype=np.bool_)
        states = [rule.state for rule in self.rules]
        self.states = _objects(states)
        # -inf: done or stopped; inf: no expiry
        self.open_until = np.array(
            [
                -math.inf
                if state.done or state.stopped
                else math.inf
                if rule.expires_at is None
                else rule.expires_at
                for rule, state in zip(self.rules, states, strict=True)
            ],
            dtype=np.float64,
        )
        self.admission = np.array([_ADMISSION[rule.frequency] for rule in self.rules], dtype=np.int8)
        # -inf: never fired
        self.last_bar = np.array(
            [-math.inf if state.last_bar is None else state.last_bar for state in states], dtype=np.float64
        )
        self.last_ts = np.array(
            [-math.inf if state.last_ts is None else state.last_ts for state in states], dtype=np.float64
        )

    def admit(self, positions: NDArray[np.intp], *, bar_start: int, now: float) -> NDArray[np.bool_]:
        """Which of the condition rules at `positions` (each once), whose condition the bar starting
        at `bar_start` met, fire at `now`: those not done, stopped or expired that their frequency
        lets through (`_admit`, whose record of the firing this makes in the arrays and the states)."""
        admission = self.admission[positions]
        fires = (
            (self.open_until[positions] > now)
            & ((admission != _PER_BAR) | (self.last_bar[positions] < bar_start))
            & ((admission != _PER_MINUTE) | (now - self.last_ts[positions] >= MINUTE_S))
        )
        fired, how = positions[fires], admission[fires]
        first = fired[how == _FIRST]
        self.open_until[first] = -math.inf
        for state in self.states[first].tolist():
            state.done = True
        per_bar = fired[how == _PER_BAR]
        self.last_bar[per_bar] = bar_start
        for state in self.states[per_bar].tolist():
            state.last_bar = bar_start
        per_minute = fired[how == _PER_MINUTE]
        self.last_ts[per_minute] = now
        for state in self.states[per_minute].tolist():
            state.last_ts = now
        return fires

    def titles_of(self, positions: NDArray[np.intp], codes: NDArray[np.intp]) -> NDArray[np.object_]:
        """The firing titles of the condition rules at `positions` in the directions of `codes`
        (`_DIRECTION_CODES`), each made on the rule's first firing in that direction."""
        # The title of the rule at p in the direction with code c is at 3 * p + c
        places = 3 * positions + codes
        untitled = places[~self.titled[places]]
        rules = self.rules
        self.titles[untitled] = _objects(
            [_title(rules[place // 3], _DIRECTIONS[place % 3]) for place in untitled.tolist()]
        )
        self.titled[untitled] = True
        return self.titles[places]

    def matches(self, series: SeriesState, cur: Mapping[str, Value]) -> list["_Match"]:
        """The condition rules whose condition the bar `cur` meets, whatever their state, in groups
        that share the value and direction of their firings."""
        cur_get, prev_get = cur.get, series.values.get
        out: list[_Match] = []
        for (key, condition), low in self.levels.items():
            curr = cur_get(key)
            if curr is None:
                continue
            prev = prev_get(key)
            positions = _level_matches(condition, low, self.uppers.get((key, condition)), prev, curr)
            if len(positions):
                out.append(_tuple_new(_Match, (positions, condition, key, prev is not None and prev < curr)))
        for key, moves in self.moves.items():
            curr = cur_get(key)
            if curr is None:
                continue
            back = _back(series, key, max(m.depth for m in moves), curr)
            for m in moves:
                positions = m.matches(back)
                if len(positions):
                    out.append(_tuple_new(_Match, (positions, m.condition, key, False)))
        pasts: dict[tuple[str, int], Value | None] = {}
        for (key, other_key, condition, threshold, upper, bars), positions in self.pairs.items():
            curr = cur_get(key)
            if curr is None:
                continue
            if other_key:
                lo, lo_prev = cur_get(other_key), prev_get(other_key)
                if lo is None or lo_prev is None:
                    continue
            else:
                lo = lo_prev = threshold
            prev = prev_get(key)
            past = _past(series, key, bars, pasts) if bars else None
            if _met(condition, prev, curr, lo_prev, lo, upper, past):
                rising = condition is _CROSSING and prev < lo_prev  # type: ignore[operator]
                out.append(_tuple_new(_Match, (positions, condition, key, rising)))
        return out


class _Match(NamedTuple):
    """Built with `tuple.__new__`, as `Firing` is."""

    positions: NDArray[np.intp]  # in the rule list
    condition: Condition
    key: str  # the series whose value the firings carry
    rising: bool  # a crossing (either way) came from below


def _past(
    series: SeriesState, key: str, bars: int, pasts: dict[tuple[str, int], Value | None]
) -> Value | None:
    window = (key, bars)
    if window not in pasts:
        past: Value | None = series.past(key, bars)
        if past is not None and key in PRICE_KEYS:
            # History keeps floats; a price's float gives back its decimal digits exactly.
            past = Decimal(repr(past))
        pasts[window] = past
    return pasts[window]


def _level_matches(
    condition: Condition, low: _Levels, high: _Levels | None, prev: Value | None, curr: Value
) -> NDArray[np.intp]:
    """The positions of the constant-level rules of one series and condition that the move from
    `prev` to `curr` meets (`_met`). `low`: by level (a channel's lower bound); `high`: channels by
    upper bound."""
    levels, positions = low.levels, low.positions
    if condition is _GREATER_THAN:  # level < curr
        return positions[: bisect_left(levels, curr)]
    if condition is _LESS_THAN:  # level > curr
        return positions[bisect_right(levels, curr) :]
    if high is None:  # a crossing
        if prev is not None and prev < curr and condition is not _CROSSING_DOWN:
            return positions[bisect_right(levels, prev) : bisect_right(levels, curr)]  # prev < level <= curr
        if prev is not None and prev > curr and condition is not _CROSSING_UP:
            return positions[bisect_left(levels, curr) : bisect_left(levels, prev)]  # curr <= level < prev
        return _NONE
    if condition is _OUTSIDE_CHANNEL:  # lower > curr, or upper < curr
        return np.concatenate(
            (positions[bisect_right(levels, curr) :], high.positions[: bisect_left(high.levels, curr)])
        )
    if condition is _INSIDE_CHANNEL:  # lower <= curr <= upper
        end = bisect_right(levels, curr)
        return positions[:end][low.bounds[:end] >= curr]
    if prev is None or prev == curr:
        return _NONE
    lo, hi = (prev, curr) if prev < curr else (curr, prev)
    if (condition is _ENTERING_CHANNEL) is (prev < curr):
        # entering upwards or exiting downwards: lower in (lo, hi], upper >= hi
        start, end = bisect_right(levels, lo), bisect_right(levels, hi)
        return positions[start:end][low.bounds[start:end] >= hi]
    # exiting upwards or entering downwards: upper in [lo, hi), lower <= lo
    start, end = bisect_left(high.levels, lo), bisect_left(high.levels, hi)
    return high.positions[start:end][high.bounds[start:end] <= lo]


class _Back(NamedTuple):
    """What the moving rules of one series compare on a bar, by window: index `bars` holds the value
    of `bars` bars back (`SeriesState.past`; index 0 has none)."""

    known: NDArray[np.bool_]  # there is a value that far back
    nonzero: NDArray[np.bool_]  # ... and it is not zero (a percentage needs one)
    base: NDArray[Any]  # its absolute value
    measures: dict[Condition, NDArray[Any]]  # what a condition compares with its amount (`_met`)


def _back(series: SeriesState, key: str, depth: int, curr: Value) -> _Back:
    """The moves of `curr` over each window up to `depth` bars, computed as `_met` computes them:
    floats in float64 (as Python's floats do), a price on its exact Decimals in an object array (a
    price's float in the history gives back its decimal digits exactly, as in `_past`)."""
    column = series.history.get(key, [])
    values = [None, *reversed(column[-depth:])]
    values += [None] * (depth + 1 - len(values))
    known = np.array([value is not None for value in values], dtype=np.bool_)
    past: NDArray[Any]
    if key in PRICE_KEYS:  # no value: a zero that `known` leaves out
        past = _objects([_ZERO if value is None else Decimal(repr(value)) for value in values])
    else:
        past = np.array(values, dtype=np.float64)  # no value: NaN
    change = curr - past
    scaled = change * 100
    measures = {_MOVING_UP: change, _MOVING_DOWN: -change, _MOVING_UP_PCT: scaled, _MOVING_DOWN_PCT: -scaled}
    return _Back(known, known & (past != 0), np.abs(past), measures)


class _Moves:
    """The moving rules of one series and condition against constant amounts (or percentages): their
    windows (`bars`, 1 to MAX_BARS: `validate_spec`), amounts and positions in the rule list."""

    __slots__ = ("amounts", "bars", "condition", "depth", "percent", "positions")

    def __init__(self, condition: Condition, items: list[tuple[int, Value, int]]) -> None:
        self.condition = condition
        self.percent = condition in PERCENT_CONDITIONS
        self.bars = np.array([bars for bars, _, _ in items], dtype=np.intp)
        amounts = [amount for _, amount, _ in items]
        exact = any(isinstance(amount, Decimal) for amount in amounts)
        self.amounts = _objects(amounts) if exact else np.array(amounts, dtype=np.float64)
        self.positions = np.array([position for _, _, position in items], dtype=np.intp)
        self.depth = int(self.bars.max())

    def matches(self, back: _Back) -> NDArray[np.intp]:
        """The positions of the rules met by the moves over their windows: a percentage p is met when
        the move x 100 >= p x |past|, without dividing (`_met`)."""
        bars = self.bars
        measure = back.measures[self.condition][bars]
        if self.percent:
            return self.positions[back.nonzero[bars] & (measure >= self.amounts * back.base[bars])]
        return self.positions[back.known[bars] & (measure >= self.amounts)]


def evaluate_bar_close(
    rules: RuleIndex | Iterable[Rule],
    series: SeriesState,
    *,
    bar_start: int,
    values: Mapping[str, Any],
    cooldown_s: float = MACDV_COOLDOWN_S,
    touched: set[int] | None = None,
) -> Firings:
    """Evaluates the bar-close rules of one (symbol, timeframe) on its newly closed bar and advances
    the series. `values` holds the bar's `close` (and open/high/low/volume) and indicator values.
    A bar at or before the last evaluated one (a redelivery) changes nothing and fires nothing.
    The bar's time is its close: once per minute counts in bar time. Firings come in the rules' order;
    `touched` receives the ids of the rules that fired or whose state may have changed. Rules given as
    a list are compiled for this call; a caller evaluating the same rules on every bar keeps their
    `RuleIndex`."""
    now = float(bar_start + TIMEFRAME_SECONDS[series.timeframe])
    if series.bar_start is not None and bar_start <= series.bar_start:
        return Firings(series.symbol, series.timeframe, bar_start, now, [], [], [], [], [])
    index = rules if isinstance(rules, RuleIndex) else RuleIndex(rules)
    cur = _finite(values)
    groups = index.matches(series, cur)
    # A rule is met once at most: the group each rule was met in (-1: none), and the rules met in
    # the rules' order (no sort)
    group_of = np.full(len(index.rules), -1, dtype=np.intp)
    for number, group in enumerate(groups):
        group_of[group.positions] = number
    met = np.flatnonzero(group_of >= 0)
    positions = met[index.admit(met, bar_start=bar_start, now=now)]
    # The firings of the rules at `positions` by column; the rule at positions[i] fired as its
    # group: groups[of[i]]
    of = group_of[positions]
    directions = [_direction(condition, rising) for _, condition, _, rising in groups]
    codes = np.array([_DIRECTION_CODES[direction] for direction in directions], dtype=np.intp)
    columns = [
        index.ids[positions],
        _objects([_LABELS[condition] for _, condition, _, _ in groups])[of],
        index.titles_of(positions, codes[of]),
        _objects([cur[key] for _, _, key, _ in groups])[of],
        _objects(directions)[of],
    ]
    touched = set() if touched is None else touched
    signals = _macdv_signals(series.values.get(MACDV), cur.get(MACDV), cur.get(MACDV_HISTOGRAM))
    if signals is not None and index.macdv:
        # Merged into the rules' order by place, two per rule: a MACD-V preset fires a crossing and a
        # reversal at most (`_macdv_apply`)
        places = (2 * positions).tolist()
        macdv: list[list[Any]] = [[], [], [], [], []]
        ids, labels, titles, macdv_values, macdv_directions = macdv
        value = float(cur[MACDV])
        for position in index.macdv:
            rule = index.rules[position]
            state = rule.state
            if state.done or state.stopped or (rule.expires_at is not None and rule.expires_at <= now):
                continue
            for place, (label, text, direction) in enumerate(_macdv_apply(state, signals, now, cooldown_s)):
                places.append(2 * position + place)
                ids.append(rule.id)
                labels.append(label)
                titles.append(f"{rule.symbol}: {text} ({rule.timeframe})")
                macdv_values.append(value)
                macdv_directions.append(direction)
            touched.add(rule.id)
        order = np.argsort(places, kind="stable")
        columns = [
            np.concatenate([column, _objects(more)])[order]
            for column, more in zip(columns, macdv, strict=True)
        ]
    firings = Firings(
        series.symbol, series.timeframe, bar_start, now, *(column.tolist() for column in columns)
    )
    touched.update(firings.rule_ids)
    history_keys = {*CHART_KEYS, *index.moving_keys, *(k for k in cur if k.startswith("ema"))}
    series.advance(bar_start, cur, index.depth, sorted(history_keys))
    return firings


def evaluate_quote(
    rules: Iterable[Rule], *, prev: Decimal | None, price: Decimal, ts_ns: int
) -> list[Firing]:
    """Evaluates live price rules of one symbol on a quote's mid. `prev` is the previous quote's mid."""
    ts = ts_ns / 1e9
    firings: list[Firing] = []
    for rule in rules:
        state = rule.state
        if state.done or state.stopped or (rule.expires_at is not None and rule.expires_at <= ts):
            continue
        condition = rule.condition
        assert condition is not None and rule.threshold is not None
        level = rule.threshold
        if not _met(condition, prev, price, level, level, rule.upper, None):
            continue
        tf_s = TIMEFRAME_SECONDS[rule.timeframe]
        bar_start = int(ts) - int(ts) % tf_s
        outcome = gate(state, rule.frequency, bar_start, ts)
        if outcome is Gate.SKIP:
            continue
        label = _LABELS[condition]
        if rule.frequency is Frequency.EVERY_TIME or rule.frequency is Frequency.ONCE_PER_MINUTE:
            label = f"{label}@{ts_ns}"  # several firings in one bar
        direction = _direction(condition, condition is Condition.CROSSING and prev < level)  # type: ignore[operator]
        firings.append(_condition_firing(rule, direction, bar_start, label, price, ts, outcome))
    return firings


MacdvEvent = tuple[str, str, Direction]  # label, text, direction
REVERSAL_UP: MacdvEvent = ("macdv_reversal_oversold", "Potential reversal up from oversold", Direction.UP)
REVERSAL_DOWN: MacdvEvent = (
    "macdv_reversal_overbought",
    "Potential reversal down from overbought",
    Direction.DOWN,
)


class _MacdvSignals(NamedTuple):
    """What one MACD-V update shows whatever a rule's state: the deepest level crossed, a reversal."""

    crossing: MacdvEvent | None
    reversal: MacdvEvent | None


def _macdv_signals(prev: Value | None, curr: Value | None, histogram: Value | None) -> _MacdvSignals | None:
    """None when the update can neither fire nor change the state of any MACD-V rule."""
    if prev is None or curr is None:
        return None
    prev, curr = float(prev), float(curr)
    crossing = reversal = None
    down = [lvl for lvl in MACDV_LEVELS if prev >= -lvl > curr]
    up = [lvl for lvl in MACDV_LEVELS if prev <= lvl < curr]
    if down:
        level = -max(down)
        crossing = (f"macdv_below_{level}", f"MACD-V crossed below {level}", Direction.DOWN)
    elif up:
        level = max(up)
        crossing = (f"macdv_above_{level}", f"MACD-V crossed above {level}", Direction.UP)
    if histogram is not None:
        histogram = float(histogram)
        if (
            prev < -MACDV_REVERSAL_LEVEL
            and curr < -MACDV_REVERSAL_LEVEL
            and histogram > OVERSOLD_REVERSAL_HIST * abs(curr)
        ):
            reversal = REVERSAL_UP
        elif (
            prev > MACDV_REVERSAL_LEVEL
            and curr > MACDV_REVERSAL_LEVEL
            and histogram < -OVERBOUGHT_REVERSAL_HIST * abs(curr)
        ):
            reversal = REVERSAL_DOWN
    if crossing is None and reversal is None:
        return None
    return _MacdvSignals(crossing, reversal)


def _macdv_apply(state: RuleState, signals: _MacdvSignals, now: float, cooldown_s: float) -> list[MacdvEvent]:
    candidates = []
    if signals.crossing is not None:
        candidates.append(signals.crossing)
        state.latch_oversold = state.latch_overbought = False
    if signals.reversal is REVERSAL_UP and not state.latch_oversold:
        state.latch_oversold = True
        candidates.append(REVERSAL_UP)
    elif signals.reversal is REVERSAL_DOWN and not state.latch_overbought:
        state.latch_overbought = True
        candidates.append(REVERSAL_DOWN)
    events = []
    for label, text, direction in candidates:
        last = state.cooldowns.get(label)
        if last is not None and now - last < cooldown_s:
            continue
        state.cooldowns[label] = now
        events.append((label, text, direction))
    return events


def macdv_events(
    state: RuleState,
    *,
    prev: float | None,
    curr: float,
    histogram: float | None,
    now: float,
    cooldown_s: float = MACDV_COOLDOWN_S,
) -> list[MacdvEvent]:
    """MACD-V preset events (label, text, direction) for one update; updates latches and cooldowns.

    Level crossings fire at -150..-400 going down and +150..+400 going up, only the deepest level
    crossed in one update. A reversal from oversold (both values below -150, histogram above 5% of
    |value|) or overbought (both above +150, histogram below -3% of |value|) fires once, then stays
    latched until the next level crossing. Each label has its own cooldown. The texts are the
    replaced Livermore monitor's ("MACD-V crossed below -150", "Potential reversal up from oversold")."""
    signals = _macdv_signals(prev, curr, histogram)
    return [] if signals is None else _macdv_apply(state, signals, now, cooldown_s)


BULLISH, BEARISH, NEUTRAL = "Bullish", "Bearish", "Neutral"


def bias_of_stages(stages: Mapping[str, str | None]) -> str:
    """Bullish, Bearish or Neutral from each timeframe's MACD-V stage (see the module docstring)."""
    bull = bear = 0
    for timeframe, stage in stages.items():
        weight = TIMEFRAME_WEIGHTS.get(timeframe, 0)
        if stage in BULLISH_STAGES:
            bull += weight
        elif stage in BEARISH_STAGES:
            bear += weight
    if bull > BIAS_RATIO * bear:
        return BULLISH
    if bear > BIAS_RATIO * bull:
        return BEARISH
    return NEUTRAL


def bias(frames: Mapping[str, tuple[float | None, float | None] | None]) -> str:
    """Bullish, Bearish or Neutral from each timeframe's (MACD-V, signal); a missing timeframe or value
    has the stage "unknown", which counts for neither side."""
    return bias_of_stages({tf: macdv_stage(*(frame or (None, None))) for tf, frame in frames.items()})


class MacdvFrame(NamedTuple):
    """One timeframe's latest evaluated MACD-V, its signal and diagnostics (None where unknown)."""

    value: float | None
    signal: float | None
    diagnostics: Diagnostics | None


def macdv_payload(frames: Mapping[str, MacdvFrame | None], *, timeframe: str) -> dict[str, Any]:
    """What an alert stores of the symbol's MACD-V when it fires: each timeframe's value, signal and
    stage, the bias, and the diagnostics of the alert's own timeframe."""
    values = {tf: frame.value if frame else None for tf, frame in frames.items()}
    signals = {tf: frame.signal if frame else None for tf, frame in frames.items()}
    stages = {tf: macdv_stage(values[tf], signals[tf]) for tf in frames}
    own = frames.get(timeframe)
    return {
        "frames": values,
        "signals": signals,
        "stages": stages,
        "bias": bias_of_stages(stages),
        "diagnostics": own.diagnostics.to_json() if own and own.diagnostics else None,
    }
