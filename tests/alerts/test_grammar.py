"""TradingView's alert grammar (docs/alerts.md) in the pure engine: each condition at, just below and
just above its thresholds, each frequency, expiry, the flood stop, and Discord's price format.

Every expected list is worked out by hand from the definitions, bar by bar, in the comments."""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from alerts.discord import format_price
from alerts.rules import (
    FLOOD_MAX,
    STOPPED,
    Condition,
    Direction,
    Frequency,
    Rule,
    RuleState,
    SeriesState,
    evaluate_bar_close,
    evaluate_quote,
    expiry_errors,
    stop_notice,
    validate_spec,
)

BAR = 1_767_225_600  # 2026-01-01 00:00 UTC
M5 = 300


def rule(condition: Condition, threshold: Any = None, **kw: Any) -> Rule:
    kw.setdefault("frequency", Frequency.ONCE_PER_BAR_CLOSE)
    return Rule(1, "BTCUSD", "5m", condition=condition, threshold=threshold, **kw)


def closes(r: Rule, values: Sequence[Any], *, key: str = "close") -> list[int]:
    """Bar-close evaluation, one bar per value: the indexes of the bars that fired."""
    series = SeriesState(r.symbol, r.timeframe)
    return [
        i
        for i, value in enumerate(values)
        if evaluate_bar_close([r], series, bar_start=BAR + i * M5, values={key: value})
    ]


def quotes(
    r: Rule, prices: Sequence[Any], *, start_s: float = 0, step_s: float = 10
) -> list[tuple[float, str]]:
    """Quote evaluation, one quote per price every `step_s` from BAR + start_s: (seconds after BAR, label)."""
    prev, out = None, []
    for i, price in enumerate(prices):
        at = start_s + i * step_s
        mid = Decimal(price)
        for f in evaluate_quote([r], prev=prev, price=mid, ts_ns=int((BAR + at) * 1_000_000_000)):
            out.append((at, STOPPED if f.stop else f.label))
        prev = mid
    return out


def dec(*values: str) -> list[Decimal]:
    return [Decimal(v) for v in values]


# Around the level 100: below, on it, above, back on it from above, below, above, above.
AROUND_100 = dec("99.99", "100", "100.01", "100", "99.99", "100.01", "100.01")
# Around the channel 100..110: below, on the lower bound, on the upper, above, back on the upper,
# just inside, below.
AROUND_CHANNEL = dec("99.99", "100", "110", "110.01", "110", "109.99", "99.99")


@pytest.mark.parametrize(
    ("condition", "upper", "values", "expected"),
    [
        # 99.99 -> 100 reaches the level from below (1); 99.99 -> 100.01 passes it (5). 100 -> 100.01
        # leaves the level (2) and 100.01 -> 100 comes from above (3): not crossings up.
        (Condition.CROSSING_UP, None, AROUND_100, [1, 5]),
        # 100.01 -> 100 reaches the level from above (3); 100 -> 99.99 leaves it (4).
        (Condition.CROSSING_DOWN, None, AROUND_100, [3]),
        (Condition.CROSSING, None, AROUND_100, [1, 3, 5]),
        # strictly above / below: 100 itself is neither
        (Condition.GREATER_THAN, None, AROUND_100, [2, 5, 6]),
        (Condition.LESS_THAN, None, AROUND_100, [0, 4]),
        # bounds are inside: 99.99 -> 100 enters (1), 110.01 -> 110 enters (4)
        (Condition.ENTERING_CHANNEL, Decimal(110), AROUND_CHANNEL, [1, 4]),
        # 110 -> 110.01 exits (3), 109.99 -> 99.99 exits (6)
        (Condition.EXITING_CHANNEL, Decimal(110), AROUND_CHANNEL, [3, 6]),
        (Condition.INSIDE_CHANNEL, Decimal(110), AROUND_CHANNEL, [1, 2, 4, 5]),
        (Condition.OUTSIDE_CHANNEL, Decimal(110), AROUND_CHANNEL, [0, 3, 6]),
    ],
)
def test_level_and_channel_conditions_on_bar_close_and_on_quotes(
    condition: Condition, upper: Decimal | None, values: list[Decimal], expected: list[int]
) -> None:
    assert closes(rule(condition, Decimal(100), upper=upper), values) == expected
    live = rule(condition, Decimal(100), upper=upper, frequency=Frequency.EVERY_TIME)
    assert live.live
    assert [int(at // 10) for at, _ in quotes(live, values)] == expected


@pytest.mark.parametrize(
    ("condition", "threshold", "bars", "values", "expected"),
    [
        # bar 2: 104.99 - 100 = 4.99 < 5; bar 3: 105 - 100 = 5 (exactly); bar 4: 105.01 - 104.99 = 0.02;
        # bar 5: 110.01 - 105 = 5.01
        (Condition.MOVING_UP, "5", 2, dec("100", "100", "104.99", "105", "105.01", "110.01"), [3, 5]),
        # bar 1: 100 - 95 = 5; bar 2: 95 - 90.01 = 4.99; bar 3: 90.01 - 85 = 5.01
        (Condition.MOVING_DOWN, "5", 1, dec("100", "95", "90.01", "85"), [1, 3]),
        # 0.3 - 0.2 is exactly 0.1 in decimal (0.09999999999999998 in binary floating point)
        (Condition.MOVING_DOWN, "0.1", 1, dec("0.3", "0.2"), [1]),
        # bar 1: +10% exactly; bar 2: 10.99 / 110 = 9.99%; bar 3: 12.1 / 120.99 = 10.0008%
        (Condition.MOVING_UP_PCT, "10", 1, dec("100", "110", "120.99", "133.09"), [1, 3]),
        # bar 1: -10% exactly; bar 2: 8.99 / 90 = 9.99%; bar 3: 8.11 / 81.01 = 10.011%
        (Condition.MOVING_DOWN_PCT, "10", 1, dec("100", "90", "81.01", "72.9"), [1, 3]),
        # 1.1 -> 1.21 is +10% exactly; a zero base has no percentage
        (Condition.MOVING_UP_PCT, "10", 1, dec("1.1", "1.21", "0", "5"), [1]),
    ],
)
def test_moving_conditions_compare_with_the_value_n_bars_back(
    condition: Condition, threshold: str, bars: int, values: list[Decimal], expected: list[int]
) -> None:
    r = rule(condition, Decimal(threshold), bars=bars, frequency=Frequency.EVERY_TIME)
    assert not r.live  # they need closed bars
    assert closes(r, values) == expected


def test_indicator_conditions_compare_floats_with_the_same_rules() -> None:
    rsi = [69.99, 70.0, 70.01, 70.0, 69.99]
    assert closes(rule(Condition.CROSSING_UP, 70.0, source="rsi14"), rsi, key="rsi14") == [1]
    assert closes(rule(Condition.CROSSING_DOWN, 70.0, source="rsi14"), rsi, key="rsi14") == [3]
    assert closes(rule(Condition.CROSSING, 70.0, source="rsi14"), rsi, key="rsi14") == [1, 3]
    assert closes(rule(Condition.GREATER_THAN, 70.0, source="rsi14"), rsi, key="rsi14") == [2]
    # a channel on RSI 30..70: 29.99 -> 30 enters (1), 70 -> 70.01 exits (3)
    rsi = [29.99, 30.0, 70.0, 70.01, 50.0]
    assert closes(rule(Condition.ENTERING_CHANNEL, 30.0, upper=70.0, source="rsi14"), rsi, key="rsi14") == [
        1,
        4,
    ]
    assert closes(rule(Condition.EXITING_CHANNEL, 30.0, upper=70.0, source="rsi14"), rsi, key="rsi14") == [3]
    assert closes(rule(Condition.INSIDE_CHANNEL, 30.0, upper=70.0, source="rsi14"), rsi, key="rsi14") == [
        1,
        2,
        4,
    ]
    assert closes(rule(Condition.OUTSIDE_CHANNEL, 30.0, upper=70.0, source="rsi14"), rsi, key="rsi14") == [
        0,
        3,
    ]
    # MACD-V moving down by 50 over 2 bars: bar 2 -49.99, bar 3 -50 exactly
    macdv = [100.0, 80.0, 50.01, 30.0]
    assert closes(rule(Condition.MOVING_DOWN, 50.0, source="macdv", bars=2), macdv, key="macdv") == [3]
    # 110 vs 100 is +10% exactly, also in floats
    r = rule(Condition.MOVING_UP_PCT, 10.0, source="ema12", bars=1)
    assert closes(r, [100.0, 110.0, 120.98], key="ema12") == [1]


def test_crossing_another_series_exactly_onto_it_fires_once() -> None:
    r = rule(Condition.CROSSING, None, other="ema26")
    series = SeriesState("BTCUSD", "5m")
    bars = [("99", 100.0), ("100", 100.0), ("101", 100.5), ("100", 100.5)]
    fired = []
    for i, (close, ema) in enumerate(bars):
        values = {"close": Decimal(close), "ema26": ema}
        fired += [
            (i, f.direction) for f in evaluate_bar_close([r], series, bar_start=BAR + i * M5, values=values)
        ]
    # bar 1 lands on the EMA from below; bar 2 leaves it; bar 3 reaches it from above
    assert fired == [(1, Direction.UP), (3, Direction.DOWN)]


def test_crossing_titles_say_which_way_it_went() -> None:
    r = rule(Condition.CROSSING, Decimal(100), frequency=Frequency.EVERY_TIME)
    titles = [f.title for f in evaluate_quote([r], prev=Decimal(99), price=Decimal(100), ts_ns=BAR * 10**9)]
    titles += [
        f.title for f in evaluate_quote([r], prev=Decimal(101), price=Decimal(99), ts_ns=(BAR + 1) * 10**9)
    ]
    assert titles == ["BTCUSD: Price crossed above 100 (5m)", "BTCUSD: Price crossed below 100 (5m)"]


# -- frequencies -----------------------------------------------------------------------------------------


def test_once_fires_the_first_time_only() -> None:
    r = rule(Condition.CROSSING, Decimal(100), frequency=Frequency.ONCE)
    assert quotes(r, ["99", "101", "99", "101"]) == [(10, "crossing")]
    assert r.state.done


def test_once_per_bar_fires_at_the_first_qualifying_quote_of_each_bar() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.ONCE_PER_BAR)
    # quotes every 10 s from 250 s: bar 0 until 290, bar 1 from 300
    assert quotes(r, ["101"] * 10, start_s=250) == [(250, "greater_than"), (300, "greater_than")]


def test_once_per_bar_close_only_runs_on_closed_bars() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.ONCE_PER_BAR_CLOSE)
    assert not r.live
    assert closes(r, dec("101", "99", "101", "101")) == [0, 2, 3]


def test_once_per_minute_is_sixty_seconds_from_the_last_firing_across_bar_boundaries() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.ONCE_PER_MINUTE)
    assert r.live
    # from 250 s every 10 s: fires at 250; not at 300 although a new bar opened (50 s after 250);
    # at 310 (60 s), then 370; the quote at 290 is below the level
    prices = ["101", "101", "101", "101", "99", "101", "101", "101", "101", "101", "101", "101", "101"]
    fired = [at for at, _ in quotes(r, prices, start_s=250)]
    assert fired == [250, 310, 370]


def test_once_per_minute_fires_again_exactly_sixty_seconds_later() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.ONCE_PER_MINUTE)
    fired = []
    for at in (0, 59.999, 60, 119.999, 120):
        ts_ns = (BAR * 1000 + round(at * 1000)) * 1_000_000
        fired += [(at, f.label) for f in evaluate_quote([r], prev=None, price=Decimal(101), ts_ns=ts_ns)]
    assert [at for at, _ in fired] == [0, 60, 120]
    assert len({label for _, label in fired}) == 3  # several firings in one bar: each its own label


def test_once_per_minute_on_bar_close_fires_on_each_qualifying_bar() -> None:
    r = rule(Condition.GREATER_THAN, 70.0, source="rsi14", frequency=Frequency.ONCE_PER_MINUTE)
    assert closes(r, [71.0, 69.0, 72.0, 73.0], key="rsi14") == [0, 2, 3]


def test_every_time_fires_on_every_qualifying_quote() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME)
    fired = quotes(r, ["101", "101", "100", "102"], step_s=1)
    assert [at for at, _ in fired] == [0, 1, 3]
    assert len({label for _, label in fired}) == 3 and all(
        label.startswith("greater_than@") for _, label in fired
    )


def test_every_time_on_bar_close_fires_on_every_qualifying_bar() -> None:
    r = rule(Condition.LESS_THAN, 30.0, source="rsi14", frequency=Frequency.EVERY_TIME)
    assert closes(r, [29.0, 29.5, 30.0, 12.0], key="rsi14") == [0, 1, 3]


# -- expiry ----------------------------------------------------------------------------------------------


def test_a_rule_fires_until_its_expiry_and_not_at_it() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME, expires_at=BAR + 20)
    assert [at for at, _ in quotes(r, ["101"] * 4)] == [0, 10]  # 20 s: expired
    r = rule(Condition.GREATER_THAN, 50.0, source="rsi14", expires_at=BAR + M5 + 1)
    assert closes(r, [60.0, 60.0], key="rsi14") == [0]  # bar 0 closes at BAR + 300, bar 1 at + 600


def test_an_expiry_must_be_in_the_future() -> None:
    assert expiry_errors(expires_at=None, now=BAR) == {}
    assert expiry_errors(expires_at=BAR + 1, now=BAR) == {}
    assert "expires_at" in expiry_errors(expires_at=BAR, now=BAR)


# -- the flood stop --------------------------------------------------------------------------------------


def test_fifteen_firings_in_three_minutes_are_all_sent() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME)
    fired = quotes(r, ["101"] * 15, step_s=1)
    assert len(fired) == 15 and not any(label.startswith(STOPPED) for _, label in fired)
    assert not r.state.stopped


def test_the_sixteenth_firing_within_three_minutes_stops_the_rule_and_tells_its_owner() -> None:
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME)
    fired = quotes(r, ["101"] * 20, step_s=1)
    assert len(fired) == 16
    assert all(label.startswith("greater_than@") for _, label in fired[:15])
    assert fired[15] == (15, STOPPED)
    assert r.state.stopped
    (firing,) = evaluate_quote([rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME,
                                     state=RuleState(recent=[BAR + i for i in range(FLOOD_MAX)]))],
                               prev=None, price=Decimal(101), ts_ns=(BAR + 15) * 10**9)  # fmt: skip
    assert firing.stop
    notice = stop_notice(firing)
    assert notice.label == f"{STOPPED}@{(BAR + 15) * 1000}" and notice.direction is Direction.NEUTRAL
    assert notice.title == (
        "Alert stopped, triggered more than 15 times in 3 minutes: BTCUSD: Price is above 100 (5m)"
    )


def test_the_three_minutes_are_a_sliding_window() -> None:
    # 15 firings 12 s apart (0..168 s); a 16th at 179 s is within 180 s of the first: stopped
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME)
    quotes(r, ["101"] * 15, step_s=12)
    (late,) = evaluate_quote([r], prev=Decimal(101), price=Decimal(101), ts_ns=(BAR + 179) * 10**9)
    assert late.stop
    # at 180 s the first one has left the window: the 16th is the 15th within three minutes
    r = rule(Condition.GREATER_THAN, Decimal(100), frequency=Frequency.EVERY_TIME)
    quotes(r, ["101"] * 15, step_s=12)
    (on_time,) = evaluate_quote([r], prev=Decimal(101), price=Decimal(101), ts_ns=(BAR + 180) * 10**9)
    assert not on_time.stop and not r.state.stopped


def test_bar_close_firings_cannot_flood_and_are_not_counted() -> None:
    # once per bar, bars a minute apart at least: 20 firings in 20 minutes, never 16 in 3 minutes
    r = Rule(1, "BTCUSD", "1m", source="rsi14", condition=Condition.GREATER_THAN, threshold=50.0,
             frequency=Frequency.EVERY_TIME)  # fmt: skip
    series = SeriesState("BTCUSD", "1m")
    fired = [
        f
        for i in range(20)
        for f in evaluate_bar_close([r], series, bar_start=BAR + i * 60, values={"rsi14": 60.0})
    ]
    assert len(fired) == 20 and not any(f.stop for f in fired)
    assert r.state == RuleState()  # nothing to remember for an every-time rule


def test_a_stopped_rule_is_evaluated_no_more() -> None:
    r = rule(Condition.GREATER_THAN, 50.0, source="rsi14", frequency=Frequency.EVERY_TIME,
             state=RuleState(stopped=True))  # fmt: skip
    assert closes(r, [60.0, 70.0], key="rsi14") == []
    assert quotes(rule(Condition.GREATER_THAN, Decimal(1), state=RuleState(stopped=True),
                       frequency=Frequency.EVERY_TIME), ["2", "3"]) == []  # fmt: skip


def test_the_flood_state_round_trips_and_merges() -> None:
    state = RuleState(stopped=True, last_ts=BAR + 5.5, recent=[BAR + 1.0, BAR + 5.5])
    assert RuleState.from_json(state.to_json()) == state
    merged = RuleState(recent=[BAR + 1.0]).merged(RuleState(last_ts=BAR + 9.0, recent=[BAR + 9.0]))
    assert merged.recent == [BAR + 1.0, BAR + 9.0] and merged.last_ts == BAR + 9.0


# -- specs -----------------------------------------------------------------------------------------------

SPEC = {
    "kind": "condition",
    "source": "price",
    "condition": "crossing",
    "threshold": 100.0,
    "upper": None,
    "other": "",
    "bars": 1,
    "frequency": "once_per_minute",
}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"condition": "moving_up", "threshold": 0.0}, "threshold"),
        ({"condition": "moving_down", "threshold": -5.0}, "threshold"),
        ({"condition": "moving_down", "bars": 501}, "bars"),
        ({"condition": "inside_channel"}, "upper"),
        ({"condition": "outside_channel", "upper": 100.0}, "upper"),
        ({"condition": "inside_channel", "upper": 110.0, "other": "ema12", "threshold": None}, "other"),
        ({"condition": "moving_up", "other": "ema12"}, "other"),
        ({"bars": 3}, "bars"),
        ({"frequency": "once_per_hour"}, "frequency"),
        ({"condition": "crossing_sideways"}, "condition"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert validate_spec(**SPEC) == {}  # type: ignore[arg-type]
    assert field in validate_spec(**{**SPEC, **spec})


def test_every_new_condition_and_frequency_is_a_valid_spec() -> None:
    for condition in Condition:
        for frequency in Frequency:
            spec = {**SPEC, "condition": condition.value, "frequency": frequency.value}
            if "channel" in condition.value:
                spec["upper"] = 110.0
            if condition.value.startswith("moving"):
                spec["bars"], spec["threshold"] = 3, 2.5
            assert validate_spec(**spec) == {}, spec  # type: ignore[arg-type]


# -- prices in Discord messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "text"),
    [
        ("95123.455", "95,123.46"),  # 2 decimals, half up, grouped
        ("1", "1.00"),  # at 1: 2 decimals
        ("1.005", "1.01"),
        ("0.99999", "1.0000"),  # below 1: 4 decimals (rounds up to 1.0000)
        ("0.999949", "0.9999"),
        ("0.01", "0.0100"),  # at 0.01: 4 decimals
        ("0.00999999", "0.010000"),  # below 0.01: 6 decimals
        ("0.0001", "0.000100"),  # at 0.0001: 6 decimals
        ("0.00009999", "0.00009999"),  # below 0.0001: 8 decimals
        ("0.0000123456", "0.00001235"),
        ("0", "0.00000000"),
        ("-2.5", "-2.50"),  # by absolute value
        ("-0.05", "-0.0500"),
    ],
)
def test_discord_prices_have_the_replaced_systems_decimals(price: str, text: str) -> None:
    assert format_price(Decimal(price)) == text
