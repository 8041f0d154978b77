"""The indexed bar-close evaluator (`RuleIndex`) against the specification: every rule checked one by
one with `_met`, as the evaluator did before the index. Randomized rules and bars, levels put on the
bar values so that every boundary (equal, just below, just above) is met, Decimal prices and float
indicators, every condition and frequency, expiry, stopped and done rules, MACD-V presets."""

import copy
import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from alerts.rules import (
    CHANNEL_CONDITIONS,
    CHART_BARS,
    CHART_KEYS,
    MACDV,
    MACDV_COOLDOWN_S,
    MACDV_HISTOGRAM,
    MOVING_CONDITIONS,
    PERCENT_CONDITIONS,
    Condition,
    Direction,
    Firing,
    Firings,
    Frequency,
    Gate,
    Kind,
    Rule,
    RuleIndex,
    RuleState,
    SeriesState,
    Value,
    _condition_firing,
    _direction,
    _finite,
    _met,
    evaluate_bar_close,
    gate,
    macdv_events,
)
from marketdata.bars import TIMEFRAME_SECONDS

BAR = 1_767_225_600
M5 = 300


def one_by_one(
    rules: Iterable[Rule],
    series: SeriesState,
    *,
    bar_start: int,
    values: Mapping[str, Any],
    cooldown_s: float = MACDV_COOLDOWN_S,
) -> list[Firing]:
    """The specification: each rule evaluated on its own, in order."""
    if series.bar_start is not None and bar_start <= series.bar_start:
        return []
    now = float(bar_start + TIMEFRAME_SECONDS[series.timeframe])
    cur = _finite(values)
    prev_get = series.values.get
    firings: list[Firing] = []
    depth, history_keys = CHART_BARS, set(CHART_KEYS) | {k for k in cur if k.startswith("ema")}
    for rule in rules:
        if rule.moving:
            depth = max(depth, rule.bars + 1)
            history_keys.add(rule.key)
        state = rule.state
        if (
            rule.live
            or state.done
            or state.stopped
            or (rule.expires_at is not None and rule.expires_at <= now)
        ):
            continue
        if rule.kind is Kind.MACDV:
            if cur.get(MACDV) is None:
                continue
            prev, hist = prev_get(MACDV), cur.get(MACDV_HISTOGRAM)
            events = macdv_events(
                state,
                prev=None if prev is None else float(prev),
                curr=float(cur[MACDV]),
                histogram=None if hist is None else float(hist),
                now=now,
                cooldown_s=cooldown_s,
            )
            firings += [
                Firing(rule.id, rule.symbol, rule.timeframe, bar_start, label,
                       f"{rule.symbol}: {text} ({rule.timeframe})", float(cur[MACDV]), direction, now)
                for label, text, direction in events
            ]  # fmt: skip
            continue
        curr = cur.get(rule.key)
        if curr is None:
            continue
        lo: Value | None
        if rule.other:
            lo, lo_prev = cur.get(rule.other_key), prev_get(rule.other_key)
            if lo is None or lo_prev is None:
                continue
        else:
            lo = lo_prev = rule.threshold
        past: Value | None = series.past(rule.key, rule.bars) if rule.moving else None
        if past is not None and rule.exact:
            past = Decimal(repr(past))
        prev = prev_get(rule.key)
        condition: Condition = rule.condition  # type: ignore[assignment]
        if not _met(condition, prev, curr, lo_prev, lo, rule.upper, past):  # type: ignore[arg-type]
            continue
        outcome = gate(state, rule.frequency, bar_start, now, counted=False)
        if outcome is not Gate.SKIP:
            rising = condition is Condition.CROSSING and prev < lo_prev  # type: ignore[operator]
            direction = _direction(condition, rising)
            firings.append(_condition_firing(rule, direction, bar_start, condition.value, curr, now, outcome))
    series.advance(bar_start, cur, depth, sorted(history_keys))
    return firings


SOURCES = {"price": True, "high": True, "ema_20": False, "rsi_14": False}  # name: a Decimal price


def level(rng: random.Random, exact: bool, around: list[Value]) -> Value:
    """A level on, or a hair off, a value the bars take, so that the boundaries are hit."""
    base = rng.choice(around)
    step = Decimal("0.01") if exact else 0.01
    return base + rng.choice([-step, 0, 0, step])  # type: ignore[operator]


def random_rule(rng: random.Random, i: int, levels: dict[str, list[Value]]) -> Rule:
    frequency = rng.choice(list(Frequency))
    if rng.random() < 0.05:
        return Rule(i, "BTCUSD", "5m", kind=Kind.MACDV, frequency=frequency)
    source = rng.choice(list(SOURCES))
    exact = SOURCES[source]
    condition = rng.choice(list(Condition))
    threshold: Value | None = level(rng, exact, levels[source])
    upper, other, bars = None, "", 1
    if condition in CHANNEL_CONDITIONS:
        a, b = threshold, level(rng, exact, levels[source])
        if a == b:
            b = b + (Decimal("0.5") if exact else 0.5)  # type: ignore[operator]
        threshold, upper = min(a, b), max(a, b)  # type: ignore[type-var]
    elif condition in MOVING_CONDITIONS:
        bars = rng.randint(1, 4)
        amount = (
            rng.choice([0.5, 1, 2, 3, 5]) if condition in PERCENT_CONDITIONS else rng.choice([1, 2, 5, 10])
        )
        threshold = Decimal(amount) if exact else float(amount)
    elif rng.random() < 0.2:
        other, threshold = rng.choice(["price", "ema_20", "rsi_14"]), None
    state = RuleState(done=rng.random() < 0.03, stopped=rng.random() < 0.03)
    if rng.random() < 0.2:
        state.last_bar = BAR + rng.randint(0, 8) * M5
        state.last_ts = float(state.last_bar + rng.choice([0, 240, 300]))
    expires_at = BAR + rng.randint(2, 12) * M5 if rng.random() < 0.1 else None
    return Rule(
        i, "BTCUSD", "5m", source=source, condition=condition, threshold=threshold, upper=upper,
        other=other, bars=bars, frequency=frequency, expires_at=expires_at, state=state,
    )  # fmt: skip


def random_bars(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """A walk on a coarse grid, so values repeat and land on each other's levels."""
    bars, price, rsi, macdv = [], 100, 50, 0.0
    for _ in range(count):
        price += rng.choice([-3, -1, 0, 0, 1, 3])
        rsi = min(100, max(0, rsi + rng.choice([-10, -5, 0, 5, 10])))
        macdv += rng.choice([-120.0, -60.0, 0.0, 60.0, 120.0])
        values: dict[str, Any] = {
            "close": Decimal(price),
            "high": Decimal(price) + Decimal("0.5") * rng.randint(0, 2),
            "ema_20": float(price + rng.choice([-1, 0, 1])),
            "rsi_14": float(rsi),
            MACDV: macdv,
            MACDV_HISTOGRAM: rng.choice([-20.0, 0.0, 20.0]),
        }
        if rng.random() < 0.1:
            del values[rng.choice(["ema_20", "rsi_14", "high"])]  # a series missing on a bar
        bars.append(values)
    return bars


def bar_levels(bars: list[dict[str, Any]]) -> dict[str, list[Value]]:
    """The values each source takes on the bars, for `random_rule` to put levels on."""
    return {
        "price": [b["close"] for b in bars],
        "high": [b.get("high", Decimal(100)) for b in bars],
        "ema_20": [b.get("ema_20", 100.0) for b in bars],
        "rsi_14": [b.get("rsi_14", 50.0) for b in bars],
    }


def assert_same_columns(got: Firings, expected: list[Firing]) -> None:
    """The columns hold the firings' fields, in order; the bar's constants are every firing's."""
    assert len(got) == len(expected)
    assert (got.rule_ids, got.labels, got.titles, got.values, got.directions) == (
        [f.rule_id for f in expected],
        [f.label for f in expected],
        [f.title for f in expected],
        [f.value for f in expected],
        [f.direction for f in expected],
    )
    assert all(
        (f.symbol, f.timeframe, f.bar_start, f.ts, f.stop)
        == (got.symbol, got.timeframe, got.bar_start, got.ts, False)
        for f in expected
    )
    # what the service stores from: the rows are the firings' fields
    assert list(got.rows()) == [tuple(f) for f in expected]


def run_both(rules: list[Rule], bars: list[dict[str, Any]]) -> None:
    spec_rules = copy.deepcopy(rules)
    index, indexed, specified = RuleIndex(rules), SeriesState("BTCUSD", "5m"), SeriesState("BTCUSD", "5m")
    for i, values in enumerate(bars):
        touched: set[int] = set()
        before = {r.id: copy.deepcopy(r.state) for r in rules}
        got = evaluate_bar_close(index, indexed, bar_start=BAR + i * M5, values=values, touched=touched)
        expected = one_by_one(spec_rules, specified, bar_start=BAR + i * M5, values=values)
        assert list(got) == expected, f"bar {i}"
        assert_same_columns(got, expected)
        assert [r.state for r in rules] == [r.state for r in spec_rules], f"bar {i}"
        assert {r.id for r in rules if r.state != before[r.id]} <= touched
        assert (indexed.values, indexed.history, indexed.starts) == (
            specified.values,
            specified.history,
            specified.starts,
        )


@pytest.mark.parametrize("seed", range(12))
def test_the_index_fires_what_each_rule_checked_on_its_own_fires(seed: int) -> None:
    rng = random.Random(seed)
    bars = random_bars(rng, 40)
    run_both([random_rule(rng, i, bar_levels(bars)) for i in range(400)], bars)


@pytest.mark.parametrize("seed", range(4))
def test_a_kept_index_gates_with_what_its_rules_states_say(seed: int) -> None:
    # the arrays the index admits firings by stay those an index built afresh from the states has
    rng = random.Random(seed)
    bars = random_bars(rng, 40)
    rules = [random_rule(rng, i, bar_levels(bars)) for i in range(400)]
    index, series = RuleIndex(rules), SeriesState("BTCUSD", "5m")
    for i, values in enumerate(bars):
        evaluate_bar_close(index, series, bar_start=BAR + i * M5, values=values)
        fresh = RuleIndex(rules)
        for column in ("open_until", "admission", "last_bar", "last_ts"):
            assert np.array_equal(getattr(index, column), getattr(fresh, column)), f"bar {i}: {column}"


@pytest.mark.parametrize("condition", list(Condition))
def test_each_condition_alone_matches_the_specification(condition: Condition) -> None:
    rng = random.Random(str(condition))
    bars = random_bars(rng, 30)
    rules = []
    for i, threshold in enumerate(range(90, 111)):
        kw: dict[str, Any] = {"frequency": Frequency.ONCE_PER_BAR_CLOSE, "threshold": Decimal(threshold)}
        if condition in CHANNEL_CONDITIONS:
            kw["upper"] = Decimal(threshold + rng.choice([1, 3]))
        if condition in MOVING_CONDITIONS:
            kw["threshold"], kw["bars"] = Decimal(rng.choice([1, 2, 3])), rng.randint(1, 3)
        rules.append(Rule(i, "BTCUSD", "5m", condition=condition, **kw))
    run_both(rules, bars)


@pytest.mark.parametrize("seed", range(4))
def test_moves_over_windows_longer_than_the_history_match_the_specification(seed: int) -> None:
    # every window from 1 bar to beyond the history, on Decimal prices and floats (a series missing
    # on some bars leaves gaps), amounts and percentages on the moves the coarse walk makes
    rng = random.Random(seed)
    bars = random_bars(rng, 30)
    rules = []
    for i in range(600):
        source = rng.choice(list(SOURCES))
        condition = rng.choice(sorted(MOVING_CONDITIONS))
        amount = rng.choice(
            [0.5, 1, 2, 3, 5, 10] if condition in PERCENT_CONDITIONS else [0.5, 1, 2, 3, 4, 6]
        )
        threshold = Decimal(amount) if SOURCES[source] else float(amount)
        rules.append(
            Rule(i, "BTCUSD", "5m", source=source, condition=condition, threshold=threshold,
                 bars=rng.randint(1, 40), frequency=rng.choice(list(Frequency)))
        )  # fmt: skip
    run_both(rules, bars)


def test_equal_levels_fire_in_the_rules_order() -> None:
    rules = [
        Rule(i, "BTCUSD", "5m", condition=Condition.GREATER_THAN, threshold=Decimal(100 - i % 2))
        for i in range(6)
    ]
    series = SeriesState("BTCUSD", "5m")
    fired = evaluate_bar_close(RuleIndex(rules), series, bar_start=BAR, values={"close": Decimal(101)})
    assert [f.rule_id for f in fired] == [0, 1, 2, 3, 4, 5]


def test_a_crossing_fires_up_or_down_as_it_went() -> None:
    r = Rule(
        1,
        "BTCUSD",
        "5m",
        source="rsi_14",
        condition=Condition.CROSSING,
        threshold=50,
        frequency=Frequency.EVERY_TIME,
    )
    index, series = RuleIndex([r]), SeriesState("BTCUSD", "5m")
    directions = [
        [
            f.direction
            for f in evaluate_bar_close(index, series, bar_start=BAR + i * M5, values={"rsi_14": rsi})
        ]
        for i, rsi in enumerate([49.0, 50.0, 51.0, 49.0])
    ]
    assert directions == [[], [Direction.UP], [], [Direction.DOWN]]


@pytest.mark.parametrize(
    ("frequency", "expected"),
    [
        (Frequency.ONCE, [1]),
        (Frequency.ONCE_PER_BAR, [1, 2, 3]),
        (Frequency.ONCE_PER_BAR_CLOSE, [1, 2, 3]),
        (Frequency.ONCE_PER_MINUTE, [1, 2, 3]),
        (Frequency.EVERY_TIME, [1, 2, 3]),
    ],
)
def test_frequencies_gate_the_firings_of_a_kept_index(frequency: Frequency, expected: list[int]) -> None:
    r = Rule(
        1,
        "BTCUSD",
        "5m",
        source="rsi_14",
        condition=Condition.GREATER_THAN,
        threshold=70,
        frequency=frequency,
    )
    index, series = RuleIndex([r]), SeriesState("BTCUSD", "5m")
    fired = [
        i
        for i, rsi in enumerate([60.0, 75.0, 80.0, 71.0])
        if evaluate_bar_close(index, series, bar_start=BAR + i * M5, values={"rsi_14": rsi})
    ]
    assert fired == expected
    assert r.state.done is (frequency is Frequency.ONCE)


def test_a_bar_already_fired_by_a_quote_is_not_fired_again() -> None:
    r = Rule(
        1, "BTCUSD", "5m", source="rsi_14", condition=Condition.GREATER_THAN, threshold=70,
        frequency=Frequency.ONCE_PER_BAR, state=RuleState(last_bar=BAR + M5),
    )  # fmt: skip
    index, series = RuleIndex([r]), SeriesState("BTCUSD", "5m")
    assert not evaluate_bar_close(index, series, bar_start=BAR + M5, values={"rsi_14": 75.0})
    assert evaluate_bar_close(index, series, bar_start=BAR + 2 * M5, values={"rsi_14": 75.0})


def test_macdv_cooldown_and_latch_hold_across_bars_of_a_kept_index() -> None:
    r = Rule(7, "BTCUSD", "5m", kind=Kind.MACDV)
    index, series = RuleIndex([r]), SeriesState("BTCUSD", "5m")
    labels = [
        [
            f.label
            for f in evaluate_bar_close(index, series, bar_start=BAR + i * M5, values=values, cooldown_s=900)
        ]
        for i, values in enumerate(
            [
                {MACDV: -100.0},
                {MACDV: -160.0, MACDV_HISTOGRAM: 10.0},  # crossed -150 and reversing
                {MACDV: -140.0},
                {MACDV: -155.0, MACDV_HISTOGRAM: 10.0},  # -150 again within the cooldown: nothing
                {MACDV: -170.0, MACDV_HISTOGRAM: 10.0},  # reversing up from oversold
                {MACDV: -180.0, MACDV_HISTOGRAM: 10.0},  # still reversing: latched
            ]
        )
    ]
    assert labels == [[], ["macdv_below_-150"], [], [], ["macdv_reversal_oversold"], []]


def test_a_rule_added_or_removed_counts_once_the_index_is_built_again() -> None:
    above = Rule(1, "BTCUSD", "5m", condition=Condition.GREATER_THAN, threshold=Decimal(100))
    below = Rule(2, "BTCUSD", "5m", condition=Condition.LESS_THAN, threshold=Decimal(200))
    series = SeriesState("BTCUSD", "5m")
    first = evaluate_bar_close(RuleIndex([above]), series, bar_start=BAR, values={"close": Decimal(150)})
    second = evaluate_bar_close(
        RuleIndex([above, below]), series, bar_start=BAR + M5, values={"close": Decimal(150)}
    )
    third = evaluate_bar_close(
        RuleIndex([below]), series, bar_start=BAR + 2 * M5, values={"close": Decimal(150)}
    )
    assert [[f.rule_id for f in fired] for fired in (first, second, third)] == [[1], [1, 2], [2]]


def test_expired_stopped_and_done_rules_do_not_fire_but_keep_the_history_deep() -> None:
    above: dict[str, Any] = {"condition": Condition.GREATER_THAN, "threshold": Decimal(1)}
    rules = [
        Rule(1, "BTCUSD", "5m", **above, expires_at=BAR + M5),
        Rule(2, "BTCUSD", "5m", **above, state=RuleState(stopped=True)),
        Rule(3, "BTCUSD", "5m", condition=Condition.MOVING_UP, threshold=Decimal(1), bars=300),
    ]
    rules[2].state.done = True
    index, series = RuleIndex(rules), SeriesState("BTCUSD", "5m")
    assert not evaluate_bar_close(index, series, bar_start=BAR, values={"close": Decimal(2)})
    assert index.depth == 301


def test_a_presets_crossing_and_reversal_of_one_bar_keep_the_rules_order() -> None:
    # -160 -> -210 crosses -200 down, and both below -150 with the histogram above 5% of 210: the
    # MACD-V preset fires twice on the bar, between the rules before and after it
    rules = [
        Rule(0, "BTCUSD", "5m", source=MACDV, condition=Condition.LESS_THAN, threshold=-180.0),
        Rule(1, "BTCUSD", "5m", kind=Kind.MACDV),
        Rule(2, "BTCUSD", "5m", source=MACDV, condition=Condition.CROSSING_DOWN, threshold=-200.0),
        Rule(3, "BTCUSD", "5m", kind=Kind.MACDV, state=RuleState(latch_oversold=True)),
    ]
    index, series = RuleIndex(rules), SeriesState("BTCUSD", "5m")
    assert not evaluate_bar_close(index, series, bar_start=BAR, values={MACDV: -160.0})
    fired = evaluate_bar_close(
        index, series, bar_start=BAR + M5, values={MACDV: -210.0, MACDV_HISTOGRAM: 20.0}
    )
    assert [(f.rule_id, f.label) for f in fired] == [
        (0, "less_than"),
        (1, "macdv_below_-200"),
        (1, "macdv_reversal_oversold"),
        (2, "crossing_down"),
        (3, "macdv_below_-200"),
        (3, "macdv_reversal_oversold"),  # the crossing released the latch
    ]


def test_firings_are_values_a_stop_is_a_changed_copy() -> None:
    r = Rule(1, "BTCUSD", "5m", source="rsi_14", condition=Condition.GREATER_THAN, threshold=70.0)
    (firing,) = evaluate_bar_close(
        RuleIndex([r]), SeriesState("BTCUSD", "5m"), bar_start=BAR, values={"rsi_14": 75.0}
    )
    assert firing == Firing(1, "BTCUSD", "5m", BAR, "greater_than", "BTCUSD: RSI 14 is above 70 (5m)",
                            75.0, Direction.UP, float(BAR + M5))  # fmt: skip
    stopped = firing._replace(stop=True)
    assert stopped.stop and not firing.stop and stopped[:9] == firing[:9]
