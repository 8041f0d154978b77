"""MACD-V stages and their boundaries (precedence in alerts.indicators.macdv_stage)."""

import math

import pytest

from alerts import indicators as ind

NAN = math.nan


CASES = [
    # Oversold below -150 whatever the signal; -150 itself is not oversold.
    (-150.01, -100, ind.OVERSOLD),
    (-200, -300, ind.OVERSOLD),
    (-151, NAN, ind.OVERSOLD),
    (-150, -160, ind.REBOUNDING),
    (-150, -140, ind.REVERSING),
    # Overbought strictly above 150 and above the signal; 150 itself is rallying.
    (150.01, 100, ind.OVERBOUGHT),
    (150, 100, ind.RALLYING),
    (200, 250, ind.RETRACING),
    (200, 200, ind.RETRACING),
    # Rallying: 50 < value <= 150 above the signal.
    (50.01, 0, ind.RALLYING),
    (120, 100, ind.RALLYING),
    (120, 130, ind.RETRACING),
    # Ranging: the band -50..50 inclusive, whatever the signal.
    (50, 0, ind.RANGING),
    (50, 60, ind.RANGING),
    (-50, -60, ind.RANGING),
    (-50, -40, ind.RANGING),
    (0, NAN, ind.RANGING),
    # Rebounding / reversing: -150 <= value < -50, above / not above the signal.
    (-50.01, -60, ind.REBOUNDING),
    (-100, -120, ind.REBOUNDING),
    (-50.01, -40, ind.REVERSING),
    (-100, -100, ind.REVERSING),
    # Retracing: above 50 and not above the signal.
    (50.01, 60, ind.RETRACING),
    (149, 149, ind.RETRACING),
]


@pytest.mark.parametrize(("value", "signal", "stage"), CASES)
def test_stage_boundaries(value: float, signal: float, stage: str) -> None:
    assert ind.macdv_stage(value, signal) == stage


def test_every_stage_is_reachable() -> None:
    assert {stage for _, _, stage in CASES} == set(ind.MACDV_STAGES)


def test_there_is_no_stage_before_seeding() -> None:
    assert ind.macdv_stage(NAN, NAN) is None


def test_a_stage_that_needs_the_signal_waits_for_it() -> None:
    assert ind.macdv_stage(100, NAN) is None
    assert ind.macdv_stage(-100, NAN) is None


def test_vectorised_stages_match_one_by_one() -> None:
    values = [NAN, -200, -100, 0, 100, 200]
    signals = [NAN, NAN, -110, 10, 90, 300]
    assert ind.macdv_stages(values, signals) == [
        None,
        ind.OVERSOLD,
        ind.REBOUNDING,
        ind.RANGING,
        ind.RALLYING,
        ind.RETRACING,
    ]
