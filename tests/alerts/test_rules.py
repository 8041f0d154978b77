"""The pure evaluation logic: every condition, every frequency, the MACD-V preset and the bias."""

from collections.abc import Sequence
from typing import Any

import pytest

from alerts.rules import (
    Condition,
    Direction,
    Frequency,
    Kind,
    Rule,
    RuleState,
    SeriesState,
    bias,
    evaluate_bar_close,
    evaluate_quote,
    macdv_events,
    validate_spec,
)

BAR = 1_767_225_600
M5 = 300


def closes(
    rule: Rule, values: Sequence[float], *, key: str = "close", extra: Sequence[dict] = ()
) -> list[int]:
    """Evaluates the rule on one bar close per value; returns the indexes of the bars that fired."""
    series = SeriesState(rule.symbol, rule.timeframe)
    fired = []
    for i, value in enumerate(values):
        bar_values: dict[str, Any] = {key: value, **(extra[i] if extra else {})}
        if evaluate_bar_close([rule], series, bar_start=BAR + i * M5, values=bar_values):
            fired.append(i)
    return fired


def rule(condition: Condition, threshold: float | None = None, **kw: Any) -> Rule:
    kw.setdefault("frequency", Frequency.ONCE_PER_BAR_CLOSE)
    return Rule(1, "BTCUSD", "5m", condition=condition, threshold=threshold, **kw)


@pytest.mark.parametrize(
    ("condition", "threshold", "upper", "values", "expected"),
    [
        # reaching the level is crossing it (docs/alerts.md): 99 -> 100 crosses up, 100 -> 101 does not
        (Condition.CROSSING_UP, 100, None, [99, 100, 101, 102, 99, 101], [1, 5]),
        (Condition.CROSSING_DOWN, 100, None, [101, 100, 99, 98, 101, 99], [1, 5]),
        (Condition.GREATER_THAN, 100, None, [99, 101, 100, 102], [1, 3]),
        (Condition.LESS_THAN, 100, None, [101, 99, 100, 98], [1, 3]),
        (Condition.ENTERING_CHANNEL, 100, 110, [95, 105, 108, 120, 110], [1, 4]),
        (Condition.EXITING_CHANNEL, 100, 110, [105, 108, 111, 105, 99], [2, 4]),
    ],
)
def test_each_condition_fires_exactly_on_the_bars_that_meet_it(
    condition: Condition, threshold: float, upper: float | None, values: list[float], expected: list[int]
) -> None:
    assert closes(rule(condition, threshold, upper=upper), values) == expected


def test_moving_up_percent_compares_with_the_close_n_bars_back() -> None:
    r = rule(Condition.MOVING_UP_PCT, 10, bars=3)
    # bar 3 vs bar 0: 100 -> 111 (+11%); bar 4 vs bar 1: 100 -> 105 (+5%); bar 5 vs 2: 100 -> 110 (+10%)
    assert closes(r, [100, 100, 100, 111, 105, 110]) == [3, 5]


def test_moving_down_percent_needs_n_bars_of_history_first() -> None:
    r = rule(Condition.MOVING_DOWN_PCT, 5, bars=2)
    assert closes(r, [100, 90, 94, 80]) == [2, 3]  # bar 1 has only one bar behind it


def test_crossing_another_series_compares_both_bars_of_each() -> None:
    r = rule(Condition.CROSSING_UP, None, source="price", other="ema26")
    emas = [{"ema26": 100}, {"ema26": 100}, {"ema26": 104}, {"ema26": 101}]
    assert closes(r, [99, 101, 103, 102], extra=emas) == [1, 3]


def test_indicator_rules_read_their_key_and_skip_bars_without_it() -> None:
    r = rule(Condition.CROSSING_UP, 70, source="rsi14")
    series = SeriesState("BTCUSD", "5m")
    fired = [
        bool(evaluate_bar_close([r], series, bar_start=BAR + i * M5, values=v))
        for i, v in enumerate([{"rsi14": 60}, {"close": 1}, {"rsi14": 75}])
    ]
    assert fired == [False, False, True]


def test_once_fires_a_single_time_and_marks_the_rule_done() -> None:
    r = rule(Condition.GREATER_THAN, 100, frequency=Frequency.ONCE, source="rsi14")
    assert closes(r, [101, 102, 103], key="rsi14") == [0]
    assert r.state.done


def test_every_time_and_once_per_bar_close_fire_on_every_qualifying_close() -> None:
    for frequency in (Frequency.EVERY_TIME, Frequency.ONCE_PER_BAR_CLOSE):
        r = rule(Condition.GREATER_THAN, 100, frequency=frequency, source="rsi14")
        assert closes(r, [101, 99, 102, 103], key="rsi14") == [0, 2, 3]


def test_a_bar_already_evaluated_fires_nothing_again() -> None:
    r = rule(Condition.GREATER_THAN, 100)
    series = SeriesState("BTCUSD", "5m")
    assert evaluate_bar_close([r], series, bar_start=BAR, values={"close": 101})
    assert not evaluate_bar_close([r], series, bar_start=BAR, values={"close": 101})
    assert not evaluate_bar_close([r], series, bar_start=BAR - M5, values={"close": 101})


def test_expired_rules_never_fire() -> None:
    r = rule(Condition.GREATER_THAN, 100, expires_at=BAR + M5)  # expires as the first bar closes
    assert closes(r, [101, 102]) == []


def test_live_price_rules_are_left_to_the_quote_path() -> None:
    r = rule(Condition.CROSSING_UP, 100, frequency=Frequency.EVERY_TIME)
    assert r.live
    assert closes(r, [99, 101]) == []


@pytest.mark.parametrize(
    ("condition", "frequency", "live"),
    [
        (Condition.CROSSING_UP, Frequency.ONCE, True),
        (Condition.CROSSING_DOWN, Frequency.EVERY_TIME, True),
        (Condition.GREATER_THAN, Frequency.ONCE_PER_BAR, True),
        (Condition.GREATER_THAN, Frequency.EVERY_TIME, True),
        (Condition.INSIDE_CHANNEL, Frequency.ONCE_PER_MINUTE, True),
        (Condition.MOVING_UP, Frequency.EVERY_TIME, False),
        (Condition.ENTERING_CHANNEL, Frequency.ONCE, True),
        (Condition.MOVING_UP_PCT, Frequency.ONCE, False),
        (Condition.CROSSING_UP, Frequency.ONCE_PER_BAR_CLOSE, False),
    ],
)
def test_which_price_rules_run_on_quotes(condition: Condition, frequency: Frequency, live: bool) -> None:
    assert rule(condition, 100, upper=110, frequency=frequency).live is live


def quotes(r: Rule, prices: Sequence[float], *, step_s: float = 10) -> list[str]:
    prev, labels = None, []
    for i, price in enumerate(prices):
        ts_ns = int((BAR + i * step_s) * 1e9)
        labels += [f.label for f in evaluate_quote([r], prev=prev, price=price, ts_ns=ts_ns)]
        prev = price
    return labels


def test_quote_crossing_every_time_fires_on_each_cross_with_a_distinct_label() -> None:
    r = rule(Condition.CROSSING_UP, 100, frequency=Frequency.EVERY_TIME)
    labels = quotes(r, [99, 101, 99, 101])
    assert len(labels) == 2 and len(set(labels)) == 2
    assert all(label.startswith("crossing_up@") for label in labels)


def test_quote_once_per_bar_fires_once_in_each_bar() -> None:
    r = rule(Condition.GREATER_THAN, 100, frequency=Frequency.ONCE_PER_BAR)
    # 10 s apart: bars of 5 minutes hold 30 quotes
    assert quotes(r, [101] * 45) == ["greater_than", "greater_than"]


def test_quote_once_fires_only_the_first_time() -> None:
    r = rule(Condition.CROSSING_DOWN, 100, frequency=Frequency.ONCE)
    assert quotes(r, [101, 99, 101, 99]) == ["crossing_down"]


def test_quote_channel_rules() -> None:
    entering = rule(Condition.ENTERING_CHANNEL, 100, upper=110, frequency=Frequency.EVERY_TIME)
    exiting = rule(Condition.EXITING_CHANNEL, 100, upper=110, frequency=Frequency.EVERY_TIME)
    assert len(quotes(entering, [95, 105, 115, 109])) == 2
    assert len(quotes(exiting, [95, 105, 115, 109])) == 1


# -- MACD-V preset ------------------------------------------------------------------------------------


def macdv(state: RuleState, prev: float, curr: float, hist: float = 0.0, now: float = 0.0) -> list[str]:
    return [label for label, _, _ in macdv_events(state, prev=prev, curr=curr, histogram=hist, now=now)]


def test_only_the_deepest_level_crossed_in_one_update_fires() -> None:
    assert macdv(RuleState(), -140, -260) == ["macdv_below_-250"]
    assert macdv(RuleState(), 120, 410) == ["macdv_above_400"]
    assert macdv(RuleState(), -100, -149) == []


def test_levels_fire_in_the_direction_of_the_extreme_only() -> None:
    state = RuleState()
    assert macdv(state, -160, -140) == []  # recovering above -150
    assert macdv(state, 160, 140) == []


def test_cooldown_suppresses_the_same_level_for_five_minutes() -> None:
    state = RuleState()
    assert macdv(state, -140, -160, now=1000) == ["macdv_below_-150"]
    assert macdv(state, -140, -160, now=1000 + 299) == []
    assert macdv(state, -190, -210, now=1000 + 299) == ["macdv_below_-200"]  # another level: own cooldown
    assert macdv(state, -140, -160, now=1000 + 300) == ["macdv_below_-150"]


def test_reversal_from_oversold_fires_once_then_latches_until_a_level_crossing() -> None:
    state = RuleState()
    # both below -150, histogram above 5% of |value|
    assert macdv(state, -200, -190, hist=10, now=0) == ["macdv_reversal_oversold"]
    assert macdv(state, -190, -180, hist=12, now=1000) == []  # latched
    assert macdv(state, -140, -160, hist=-1, now=2000) == ["macdv_below_-150"]  # a crossing unlatches
    assert macdv(state, -160, -155, hist=9, now=3000) == ["macdv_reversal_oversold"]


def test_reversal_from_oversold_needs_the_histogram_above_five_percent() -> None:
    assert macdv(RuleState(), -200, -190, hist=9.5) == []  # 5% of 190 is 9.5: not above
    assert macdv(RuleState(), -140, -190, hist=50) == ["macdv_below_-150"]  # previous not below -150


def test_reversal_from_overbought_needs_the_histogram_below_minus_three_percent() -> None:
    state = RuleState()
    assert macdv(state, 210, 200, hist=-6) == []  # -3% of 200 is -6: not below
    assert macdv(state, 210, 200, hist=-6.5) == ["macdv_reversal_overbought"]
    assert macdv(state, 205, 200, hist=-7, now=1000) == []


def test_macdv_rule_titles_and_directions() -> None:
    r = Rule(7, "BTCUSD", "5m", kind=Kind.MACDV)
    series = SeriesState("BTCUSD", "5m")
    evaluate_bar_close([r], series, bar_start=BAR, values={"macdv": -120.0})
    (firing,) = evaluate_bar_close([r], series, bar_start=BAR + M5, values={"macdv": -151.5})
    assert firing.title == "BTCUSD: MACD-V crossed below -150 (5m)"
    assert firing.label == "macdv_below_-150"
    assert firing.direction is Direction.DOWN
    assert firing.value == -151.5


def test_reversal_titles_are_livermores() -> None:
    r = Rule(7, "BTCUSD", "5m", kind=Kind.MACDV)
    series = SeriesState("BTCUSD", "5m")
    evaluate_bar_close([r], series, bar_start=BAR, values={"macdv": -200.0})
    (up,) = evaluate_bar_close(
        [r], series, bar_start=BAR + M5, values={"macdv": -190.0, "macdv_histogram": 10.0}
    )
    assert (up.title, up.direction) == ("BTCUSD: Potential reversal up from oversold (5m)", Direction.UP)
    evaluate_bar_close([r], series, bar_start=BAR + 2 * M5, values={"macdv": 210.0})
    (down,) = evaluate_bar_close(
        [r], series, bar_start=BAR + 3 * M5, values={"macdv": 200.0, "macdv_histogram": -6.5}
    )
    assert (down.title, down.direction) == (
        "BTCUSD: Potential reversal down from overbought (5m)",
        Direction.DOWN,
    )


def test_bias_weighs_timeframes_and_needs_one_and_a_half_times_the_other_side() -> None:
    up, down, flat = (100.0, 90.0), (-100.0, -90.0), (0.0, 0.0)  # rallying, reversing, ranging
    # bullish 1h+4h = 9 vs bearish 1d = 6: 9 > 9 is false
    assert bias({"1h": up, "4h": up, "1d": down, "1m": flat}) == "Neutral"
    # bullish 1m+1h+4h = 10 > 1.5 x 6
    assert bias({"1m": up, "1h": up, "4h": up, "1d": down}) == "Bullish"
    assert bias({"5m": up, "15m": down, "1d": down}) == "Bearish"
    assert bias({"1m": None, "5m": flat}) == "Neutral"


def test_state_round_trips_through_json() -> None:
    state = RuleState(done=True, last_bar=BAR, latch_oversold=True, cooldowns={"macdv_below_-150": 12.5})
    assert RuleState.from_json(state.to_json()) == state


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"condition": "sideways"}, "condition"),
        ({"threshold": None}, "threshold"),
        ({"condition": "entering_channel", "upper": None}, "upper"),
        ({"condition": "entering_channel", "upper": 90.0}, "upper"),
        ({"condition": "moving_up_pct", "bars": 0}, "bars"),
        ({"condition": "moving_up_pct", "threshold": -1.0}, "threshold"),
        ({"source": "EMA 20"}, "source"),
        ({"frequency": "hourly"}, "frequency"),
        ({"upper": 120.0}, "upper"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    base = {
        "kind": "condition",
        "source": "price",
        "condition": "crossing_up",
        "threshold": 100.0,
        "upper": None,
        "other": "",
        "bars": 1,
        "frequency": "once",
    }
    assert validate_spec(**base) == {}
    assert field in validate_spec(**{**base, **spec})
