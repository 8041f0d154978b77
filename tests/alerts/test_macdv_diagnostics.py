"""MACD-V diagnostics as the replaced Livermore monitor defined them: nEff, span and liquidity tier over
the last 200 real bars (docs/macdv.md). Expected figures are counted by hand from the bar patterns."""

import pytest

from alerts import indicators as ind


def pattern(size: int, gaps: set[int] | range) -> list[bool]:
    return [i in gaps for i in range(size)]


def both_forms(synthetic: list[bool]) -> ind.Diagnostics:
    """The diagnostics of the last bar from the vectorised and the incremental MACD-V, which agree."""
    size = len(synthetic)
    close = [100.0 + (i % 5) for i in range(size)]
    high, low = [c + 1 for c in close], [c - 1 for c in close]
    vectorised = ind.macdv(high, low, close, synthetic).diagnostics
    state = ind.MacdVState()
    for h, lo, c, s in zip(high, low, close, synthetic, strict=True):
        state.update(h, lo, c, s)
    assert state.diagnostics == vectorised
    return vectorised


@pytest.mark.parametrize(
    ("gap_ratio", "tier"),
    [
        (0.0, "high"),
        (0.2 - 1e-12, "high"),
        (0.2, "medium"),
        (0.2 + 1e-12, "medium"),
        (0.5 - 1e-12, "medium"),
        (0.5, "low"),
        (0.5 + 1e-12, "low"),
        (1.0, "low"),
    ],
)
def test_liquidity_tiers_at_their_edges(gap_ratio: float, tier: str) -> None:
    assert ind.liquidity_tier(gap_ratio) == tier


def test_a_series_with_no_gaps_is_all_real() -> None:
    assert both_forms(pattern(50, set())) == ind.Diagnostics(n_eff=50, span=50)
    assert both_forms(pattern(50, set())).liquidity == "high"


def test_only_the_last_200_real_bars_count() -> None:
    assert both_forms(pattern(300, set())) == ind.Diagnostics(n_eff=200, span=200)


def test_gaps_inside_the_window_widen_the_span() -> None:
    # 250 bars, 50 gaps at 100..149: 200 real bars over 250, 20% synthetic: medium.
    diagnostics = both_forms(pattern(250, range(100, 150)))
    assert (diagnostics.n_eff, diagnostics.span, diagnostics.gap_ratio) == (200, 250, 0.2)
    assert diagnostics.liquidity == "medium"
    # 49 gaps in 249: just under 20%.
    assert both_forms(pattern(249, range(100, 149))).liquidity == "high"
    # 51 gaps in 251: just over.
    assert both_forms(pattern(251, range(100, 151))).liquidity == "medium"


def test_half_synthetic_is_low() -> None:
    # 400 bars, every other one from 1 a gap: real 0, 2, ..., 398, then 399 is a gap too.
    gaps = {i for i in range(400) if i % 2}
    diagnostics = both_forms(pattern(400, gaps))
    # The last 200 real bars are 0..398 (even): span 399, 199 gaps in it.
    assert (diagnostics.n_eff, diagnostics.span) == (200, 399)
    assert diagnostics.gap_ratio == 199 / 399 and diagnostics.liquidity == "medium"
    # One more real bar at 400 drops bar 0: 2..400, span 399, 199 gaps... and a gap at 401 adds none.
    assert both_forms(pattern(402, gaps | {401})) == ind.Diagnostics(n_eff=200, span=399)
    # 200 real over exactly 400: 50%.
    half = both_forms(pattern(400, set(range(100, 300))))
    assert (half.n_eff, half.span, half.gap_ratio, half.liquidity) == (200, 400, 0.5, "low")


def test_gaps_before_the_first_real_bar_or_after_the_last_are_not_in_the_span() -> None:
    assert both_forms(pattern(30, range(0, 5))) == ind.Diagnostics(n_eff=25, span=25)
    assert both_forms(pattern(30, range(25, 30))) == ind.Diagnostics(n_eff=25, span=25)


def test_a_young_sparse_series_is_unseeded_with_its_diagnostics() -> None:
    # 40 bars, 20 gaps at 10..29: the ATR has 20 real bars, not 26.
    synthetic = pattern(40, range(10, 30))
    result = ind.macdv([101.0] * 40, [99.0] * 40, [100.0] * 40, synthetic)
    assert not result.seeded and result.reason == ind.LOW_TRADING_ACTIVITY
    assert result.diagnostics == ind.Diagnostics(n_eff=20, span=40)
    assert result.diagnostics.liquidity == "low"


def test_no_real_bar_at_all_is_livermores_empty_window() -> None:
    # Livermore's gap ratio of an empty window is 0, so its tier is high; there is no MACD-V anyway.
    diagnostics = ind.macdv_diagnostics([True] * 10, 10)
    assert (diagnostics.n_eff, diagnostics.span, diagnostics.gap_ratio) == (0, 0, 0.0)
    assert ind.MacdVState().diagnostics == diagnostics


def test_the_json_form_carries_the_derived_figures() -> None:
    assert ind.Diagnostics(n_eff=150, span=200).to_json() == {
        "n_eff": 150,
        "span": 200,
        "gap_ratio": 0.25,
        "liquidity": "medium",
    }
