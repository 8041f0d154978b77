"""Golden values for alerts.indicators: hand-derived, or from the plain-Python reference in
tests/alerts/reference_indicators.py (written independently from the textbook formulas)."""

import math
import random

import numpy as np
import pytest

from alerts import indicators as ind
from tests.alerts.reference_indicators import (
    ref_atr,
    ref_bollinger,
    ref_ema,
    ref_macdv,
    ref_rsi,
    ref_sma,
    ref_true_range,
)

TOL = 1e-9

pytestmark = pytest.mark.usefixtures("recursions")


def assert_series(actual: np.ndarray, expected: list[float]) -> None:
    assert len(actual) == len(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL, equal_nan=True)


def ramp(bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    close = 100.0 + np.arange(bars, dtype=float)
    return close + 1, close - 1, close


def random_bars(bars: int, seed: int) -> tuple[list[float], list[float], list[float]]:
    rnd = random.Random(seed)
    close, high, low = [], [], []
    price = 100.0
    for _ in range(bars):
        price = max(1.0, price + rnd.gauss(0, 1))
        close.append(price)
        high.append(price + rnd.uniform(0, 2))
        low.append(price - rnd.uniform(0, 2))
    return high, low, close


class TestHandDerived:
    def test_ema_is_seeded_with_the_sma_of_the_first_n_values(self) -> None:
        # n = 3: alpha = 0.5, seed mean(1, 2, 3) = 2 at index 2; then 0.5*4 + 0.5*2 = 3, 0.5*5 + 0.5*3 = 4.
        assert_series(ind.ema([1, 2, 3, 4, 5], 3), [math.nan, math.nan, 2, 3, 4])

    def test_sma_averages_the_last_n_values(self) -> None:
        assert_series(ind.sma([1, 2, 3, 4, 6], 2), [math.nan, 1.5, 2.5, 3.5, 5])

    def test_rsi_uses_wilder_smoothing_of_gains_and_losses(self) -> None:
        # n = 2, changes +1, -1, +1: seeds at bar 2 gain = loss = 0.5 -> 50; bar 3: gain = (0.5 + 1)/2
        # = 0.75, loss = (0.5 + 0)/2 = 0.25 -> 100 * 0.75 / 1 = 75.
        assert_series(ind.rsi([1, 2, 1, 2], 2), [math.nan, math.nan, 50, 75])

    def test_rsi_is_100_when_nothing_fell_and_50_when_nothing_moved(self) -> None:
        assert ind.rsi([1, 2, 3, 4], 2)[-1] == 100
        assert ind.rsi([5, 5, 5, 5], 2)[-1] == 50

    def test_true_range_of_the_first_bar_is_high_minus_low_then_includes_gaps(self) -> None:
        high, low, close = [10, 12, 9], [8, 11, 7], [9, 11.5, 8]
        # bar 1 gaps up: max(1, |12-9|, |11-9|) = 3; bar 2 gaps down: max(2, |9-11.5|, |7-11.5|) = 4.5.
        assert_series(ind.true_range(high, low, close), [2, 3, 4.5])

    def test_atr_is_seeded_with_the_mean_of_the_first_n_true_ranges(self) -> None:
        high, low, close = [10, 12, 9], [8, 11, 7], [9, 11.5, 8]
        # TR 2, 3, 4.5; n = 2: seed (2+3)/2 = 2.5 at bar 1, then (2.5*1 + 4.5)/2 = 3.5.
        assert_series(ind.atr(high, low, close, 2), [math.nan, 2.5, 3.5])

    def test_bollinger_bands_use_the_population_deviation(self) -> None:
        bands = ind.bollinger([1, 2, 3], 3, 2.0)
        # mean 2, variance (1 + 0 + 1)/3.
        assert_series(bands.middle, [math.nan, math.nan, 2])
        assert_series(bands.upper, [math.nan, math.nan, 2 + 2 * math.sqrt(2 / 3)])
        assert_series(bands.lower, [math.nan, math.nan, 2 - 2 * math.sqrt(2 / 3)])

    def test_macd_is_the_ema_difference_with_an_ema9_signal(self) -> None:
        close = random_bars(80, seed=3)[2]
        m = ind.macd(close)
        line = [f - s for f, s in zip(ref_ema(close, 12), ref_ema(close, 26))]
        assert_series(m.macd, line)
        assert_series(m.signal, ref_ema(line, 9))
        assert_series(m.histogram, [v - s for v, s in zip(line, ref_ema(line, 9))])


class TestMacdVOnARamp:
    """close = 100 + i, high/low = close +- 1.

    True range: bar 0 is high - low = 2; every later bar max(2, |c+1 - (c-1)|, |c-1 - (c-1)|) = 2,
    so ATR26 = 2 from the bar its seed is complete. On a line x_i = a + i the EMA(n) seeded with the
    SMA of x_0..x_{n-1} starts at a + (n-1)/2 = x_{n-1} - (n-1)/2, and that lag L = (n-1)/2 is a fixed
    point: alpha*x_i + (1-alpha)*(x_{i-1} - L) = x_i - (1-alpha)(1+L) = x_i - L because
    (1-alpha)/alpha = (n-1)/2. So EMA12 = x_i - 5.5 from bar 11, EMA26 = x_i - 12.5 from bar 25, and
    MACD-V = (12.5 - 5.5) / 2 * 100 = 350.

    First valid bar: EMA26 needs 26 closes (bars 0..25) and ATR26 needs 26 true ranges (bars 0..25,
    the first being high - low), so MACD-V is first defined at bar index 25, the 26th bar, which is
    the issue's "from bar 25" counted from 0. The signal EMA9 is seeded with the mean of the first 9
    MACD-V values (bars 25..33), so it and the histogram start at bar 33: signal 350, histogram 0.
    """

    def test_macdv_is_350_from_bar_25(self) -> None:
        result = ind.macdv(*ramp(80))
        assert np.isnan(result.value[:25]).all()
        assert result.value[25] == 350.0
        np.testing.assert_allclose(result.value[25:], 350.0, rtol=0, atol=TOL)
        np.testing.assert_allclose(result.atr[25:], 2.0, rtol=0, atol=TOL)
        assert result.seeded
        assert result.reason is None

    def test_signal_and_histogram_start_at_bar_33(self) -> None:
        result = ind.macdv(*ramp(80))
        assert np.isnan(result.signal[:33]).all()
        assert np.isnan(result.histogram[:33]).all()
        np.testing.assert_allclose(result.signal[33:], 350.0, rtol=0, atol=TOL)
        np.testing.assert_allclose(result.histogram[33:], 0.0, rtol=0, atol=TOL)

    def test_incremental_gives_350_from_bar_25(self) -> None:
        state = ind.MacdVState()
        values = [state.update(h, lo, c) for h, lo, c in zip(*(a.tolist() for a in ramp(40)))]
        assert all(math.isnan(v) for v in values[:25])
        np.testing.assert_allclose(values[25:], 350.0, rtol=0, atol=TOL)

    def test_it_is_not_seeded_with_25_bars(self) -> None:
        result = ind.macdv(*ramp(25))
        assert np.isnan(result.value).all()
        assert not result.seeded
        assert result.reason == ind.LOW_TRADING_ACTIVITY  # Livermore's one reason: too few real bars


class TestSyntheticBars:
    """Real bars alternate with runs of synthetic (gap-filled) bars: OHLC = previous close."""

    @staticmethod
    def bars(pattern: list[bool], seed: int = 11) -> tuple[list[float], list[float], list[float]]:
        rnd = random.Random(seed)
        high, low, close = [], [], []
        price = 50.0
        for synthetic in pattern:
            if synthetic:
                high.append(price)
                low.append(price)
            else:
                price += rnd.uniform(-1, 1)
                high.append(price + rnd.uniform(0.1, 1))
                low.append(price - rnd.uniform(0.1, 1))
            close.append(price)
        return high, low, close

    PATTERN = [False] * 10 + [True] * 20 + [False] * 10 + [True] * 5 + [False] * 30

    def test_atr_is_carried_forward_over_synthetic_bars(self) -> None:
        high, low, close = self.bars(self.PATTERN)
        result = ind.atr(high, low, close, 14, self.PATTERN)
        assert_series(result, ref_atr(high, low, close, 14, self.PATTERN))
        # Bars 40..44 are synthetic after the 20th real bar (index 39): the ATR does not move.
        assert (result[40:45] == result[39]).all()
        # Counted as real true ranges of 0 they would have pulled it down.
        assert ind.atr(high, low, close, 14)[44] < result[44]

    def test_macdv_atr_is_seeded_only_after_26_real_true_ranges(self) -> None:
        high, low, close = self.bars(self.PATTERN)
        result = ind.macdv(high, low, close, self.PATTERN)
        # Real bars: 0..9, 30..39, 45..74; the 26th real one is bar 45 + 5 = 50.
        assert np.isnan(result.atr[:50]).all()
        assert np.isnan(result.value[:50]).all()
        assert not np.isnan(result.value[50])
        value, signal, histogram = ref_macdv(high, low, close, self.PATTERN)
        assert_series(result.value, value)
        assert_series(result.signal, signal)
        assert_series(result.histogram, histogram)
        assert_series(result.atr, ref_atr(high, low, close, 26, self.PATTERN))

    def test_unseeded_macdv_says_low_trading_activity(self) -> None:
        pattern = [False] * 10 + [True] * 20 + [False] * 10
        result = ind.macdv(*self.bars(pattern), synthetic=pattern)
        assert not result.seeded
        assert result.reason == ind.LOW_TRADING_ACTIVITY
        state = ind.MacdVState()
        for h, lo, c, s in zip(*self.bars(pattern), pattern):
            state.update(h, lo, c, s)
        assert not state.seeded
        assert state.reason == ind.LOW_TRADING_ACTIVITY
        assert state.stage == ind.UNKNOWN


class TestAgainstTheReference:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_every_indicator_matches_the_reference(self, seed: int) -> None:
        high, low, close = random_bars(300, seed)
        for n in (1, 5, 12, 26):
            assert_series(ind.ema(close, n), ref_ema(close, n))
            assert_series(ind.sma(close, n), ref_sma(close, n))
            assert_series(ind.rsi(close, n), ref_rsi(close, n))
            assert_series(ind.atr(high, low, close, n), ref_atr(high, low, close, n))
        assert_series(ind.true_range(high, low, close), ref_true_range(high, low, close))
        bands = ind.bollinger(close, 20, 2.0)
        upper, lower = ref_bollinger(close, 20, 2.0)
        assert_series(bands.upper, upper)
        assert_series(bands.lower, lower)
        result = ind.macdv(high, low, close)
        value, signal, histogram = ref_macdv(high, low, close)
        assert_series(result.value, value)
        assert_series(result.signal, signal)
        assert_series(result.histogram, histogram)

    def test_short_histories_are_all_nan(self) -> None:
        high, low, close = random_bars(5, seed=4)
        for series in (
            ind.ema(close, 12),
            ind.sma(close, 12),
            ind.rsi(close, 14),
            ind.atr(high, low, close, 14),
            ind.macd(close).macd,
            ind.bollinger(close, 20).upper,
            ind.macdv(high, low, close).value,
        ):
            assert len(series) == 5
            assert np.isnan(series).all()

    def test_empty_history_gives_empty_series(self) -> None:
        result = ind.macdv([], [], [])
        assert result.value.size == 0
        assert not result.seeded
        assert result.reason == ind.LOW_TRADING_ACTIVITY
        assert result.diagnostics == ind.Diagnostics(n_eff=0, span=0)

    def test_a_flat_market_has_a_macdv_of_zero(self) -> None:
        close = [100.0] * 40
        result = ind.macdv(close, close, close)
        assert result.atr[-1] == 0
        assert (result.value[25:] == 0).all()


class TestLongHistories:
    """Over a million bars the recursions run in blocks, and MACD-V once seeded in one fused pass; they
    give lfilter's values to rounding."""

    @staticmethod
    def bars(size: int, gaps: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(42)
        close = 100 + np.cumsum(rng.normal(0, 0.1, size))
        high, low = close + rng.uniform(0, 0.2, close.size), close - rng.uniform(0, 0.2, close.size)
        synthetic = rng.random(size) < gaps
        for i in np.flatnonzero(synthetic[1:]) + 1:  # a gap-filled bar is flat at the previous close
            high[i] = low[i] = close[i] = close[i - 1]
        return high, low, close, synthetic

    @staticmethod
    def assert_as_in_lfilter(
        high: np.ndarray, low: np.ndarray, close: np.ndarray, synthetic: np.ndarray
    ) -> None:
        result = ind.macdv(high, low, close, synthetic)
        threshold, ind._BLOCKED_FROM = ind._BLOCKED_FROM, close.size + 1
        try:
            expected = ind.macdv(high, low, close, synthetic)
        finally:
            ind._BLOCKED_FROM = threshold
        for name in ("value", "signal", "histogram", "atr"):
            np.testing.assert_array_equal(np.isnan(getattr(result, name)), np.isnan(getattr(expected, name)))
            np.testing.assert_allclose(getattr(result, name), getattr(expected, name), rtol=TOL, atol=TOL)
        assert (result.seeded, result.reason, result.diagnostics) == (
            expected.seeded,
            expected.reason,
            expected.diagnostics,
        )

    def test_macdv_over_a_million_bars_matches_lfilter(self) -> None:
        self.assert_as_in_lfilter(*self.bars(1_000_003))

    def test_macdv_with_synthetic_bars_matches_lfilter(self) -> None:
        self.assert_as_in_lfilter(*self.bars(200_000, gaps=0.3))

    def test_macdv_seeded_late_matches_lfilter(self) -> None:
        """Too few real bars to seed the ATR early: no fused pass, all of it in passes."""
        high, low, close, synthetic = self.bars(3 * ind._SEEDED_WITHIN, gaps=0.99)
        assert math.isnan(ind.macdv(high, low, close, synthetic).atr[ind._SEEDED_WITHIN - 1])
        self.assert_as_in_lfilter(high, low, close, synthetic)
