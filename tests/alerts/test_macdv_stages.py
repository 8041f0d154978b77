"""MACD-V stages and bias as the replaced Livermore monitor classified them (docs/macdv.md).

The expected labels are worked out by hand from Livermore's rules, edge by edge: every inequality
at its edge, just below it and just above it, with the value above, below and equal to its signal."""

import math

import pytest

from alerts import indicators as ind
from alerts.rules import bias, bias_of_stages

NAN = math.nan
E = 1e-9  # just off an edge
ABOVE, BELOW = -1e6, 1e6  # signals that put any value in range above / below its signal

STAGE_CASES = [
    # oversold: value < -150, whatever the signal
    (-150 - E, ABOVE, "oversold"),
    (-150 - E, BELOW, "oversold"),
    (-150 - E, -150 - E, "oversold"),
    (-400, -300, "oversold"),
    (-150, ABOVE, "unknown"),  # not oversold, and rebounding needs -150 < value
    (-150, BELOW, "unknown"),  # reversing needs -150 < value too
    (-150 + E, ABOVE, "rebounding"),
    (-150 + E, BELOW, "reversing"),
    # overbought: value > 150 and above
    (150 + E, ABOVE, "overbought"),
    (400, 300, "overbought"),
    (150, ABOVE, "unknown"),  # rallying needs value < 150
    (150 - E, ABOVE, "rallying"),
    (150 + E, BELOW, "retracing"),
    (150, BELOW, "retracing"),
    (150 + E, 150 + E, "unknown"),  # at its signal: neither above nor below, outside the band
    # rallying: 50 < value < 150 and above
    (50 + E, ABOVE, "rallying"),
    (100, 100 - E, "rallying"),
    (50, ABOVE, "unknown"),  # rebounding needs value < 50, ranging too
    (50 - E, ABOVE, "rebounding"),
    (100, 100, "unknown"),
    (100, 100 + E, "retracing"),
    # rebounding: -150 < value < 50 and above (takes -50..50 from ranging when rising)
    (20, 10, "rebounding"),
    (0, ABOVE, "rebounding"),
    (-50, ABOVE, "rebounding"),
    (-100, -120, "rebounding"),
    # reversing: -150 < value < -50 and below
    (-50 - E, BELOW, "reversing"),
    (-100, -80, "reversing"),
    (-50, BELOW, "unknown"),  # reversing needs value < -50, retracing value > -50
    (-50 + E, BELOW, "retracing"),
    # retracing: value > -50 and below
    (20, 30, "retracing"),
    (300, 350, "retracing"),
    (-50 + E, -50 + 2 * E, "retracing"),
    # ranging: -50 < value < 50, left to a value at its signal
    (0, 0, "ranging"),
    (-50 + E, -50 + E, "ranging"),
    (50 - E, 50 - E, "ranging"),
    (-50, -50, "unknown"),
    (50, 50, "unknown"),
    (-50 - E, -50 - E, "unknown"),
    (50 + E, 50 + E, "unknown"),
    # a missing value or signal is unknown, before anything else
    (NAN, 0, "unknown"),
    (0, NAN, "unknown"),
    (NAN, NAN, "unknown"),
    (-200, NAN, "unknown"),
    (200, None, "unknown"),
    (None, 0, "unknown"),
]


@pytest.mark.parametrize(("value", "signal", "stage"), STAGE_CASES)
def test_stage_edges(value: float, signal: float, stage: str) -> None:
    assert ind.macdv_stage(value, signal) == stage


def test_every_stage_is_reachable() -> None:
    assert {stage for _, _, stage in STAGE_CASES} == set(ind.MACDV_STAGES)


def test_the_vectorised_stages_and_the_incremental_state_use_the_same_rules() -> None:
    numeric = [case for case in STAGE_CASES if case[0] is not None and case[1] is not None]
    values, signals, stages = zip(*numeric, strict=True)
    assert ind.macdv_stages(values, signals) == list(stages)
    state = ind.MacdVState()
    assert state.stage == "unknown"  # nothing seen yet


UP, DOWN, FLAT = (100.0, 90.0), (100.0, 110.0), (0.0, 0.0)  # rallying, retracing, ranging


class TestBias:
    def test_each_stage_counts_for_its_side(self) -> None:
        for stage in ("oversold", "rebounding", "rallying"):
            assert bias_of_stages({"1d": stage}) == "Bullish"
        for stage in ("overbought", "retracing", "reversing"):
            assert bias_of_stages({"1d": stage}) == "Bearish"
        for stage in ("ranging", "unknown", None):
            assert bias_of_stages({"1d": stage}) == "Neutral"

    def test_nothing_known_is_neutral(self) -> None:
        assert bias({}) == "Neutral"
        assert bias(dict.fromkeys(("1m", "5m", "15m", "1h", "4h", "1d"))) == "Neutral"
        assert bias({tf: FLAT for tf in ("1m", "5m", "15m", "1h", "4h", "1d")}) == "Neutral"
        assert bias({"1h": (NAN, NAN), "4h": (120.0, None)}) == "Neutral"

    def test_exactly_one_and_a_half_times_is_neutral(self) -> None:
        # 15m (3) against 5m (2), 1d (6) against 1h (4): 1.5 x, not more.
        assert bias({"15m": UP, "5m": DOWN}) == "Neutral"
        assert bias({"15m": DOWN, "5m": UP}) == "Neutral"
        assert bias({"1d": UP, "1h": DOWN}) == "Neutral"
        assert bias({"1d": DOWN, "1h": UP}) == "Neutral"

    def test_more_than_one_and_a_half_times_wins(self) -> None:
        assert bias({"15m": UP, "1m": UP, "5m": DOWN}) == "Bullish"  # 4 > 3
        assert bias({"15m": DOWN, "1m": DOWN, "5m": UP}) == "Bearish"
        assert bias({"4h": UP, "1h": DOWN}) == "Neutral"  # 5 < 6
        assert bias({"1m": UP}) == "Bullish"  # 1 > 0

    def test_missing_timeframes_count_for_neither_side(self) -> None:
        assert bias({"1m": None, "5m": UP, "15m": None, "1h": None}) == "Bullish"
        assert bias({"1m": DOWN, "5m": None}) == "Bearish"

    def test_the_weights_are_livermores(self) -> None:
        # 1d oversold (6) and 1h rebounding (4) against 4h retracing (5): 10 > 7.5.
        frames = {"1d": (-160.0, -170.0), "4h": (120.0, 130.0), "1h": (20.0, 10.0), "1m": (-100.0, -80.0)}
        assert bias(frames) == "Bullish"  # the 1m reversing adds 1: 10 > 1.5 x 6
        assert bias({**frames, "15m": (-100.0, -80.0), "5m": (200.0, 150.0)}) == "Neutral"  # 10 vs 11

    def test_an_oversold_timeframe_is_bullish(self) -> None:
        # The old rules called MACD-V below -50 and falling bearish; Livermore counts oversold bullish.
        assert bias({"5m": (-210.0, -180.0)}) == "Bullish"
