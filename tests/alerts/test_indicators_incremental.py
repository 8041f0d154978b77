"""The incremental (per bar) form of every indicator agrees with the vectorised form to 1e-9."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import indicators as ind

TOL = 1e-9

pytestmark = pytest.mark.usefixtures("recursions")

step = st.tuples(
    st.floats(-5, 5, allow_nan=False),  # close change
    st.floats(0, 3, allow_nan=False),  # high above close
    st.floats(0, 3, allow_nan=False),  # low below close
    st.booleans(),  # synthetic (gap-filled) bar
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[float], list[float], list[float], list[bool]]:
    price = draw(st.floats(1, 1000, allow_nan=False))
    steps = draw(st.lists(step, max_size=150))
    gaps = draw(st.booleans())
    high: list[float] = []
    low: list[float] = []
    close: list[float] = []
    synthetic: list[bool] = []
    for change, up, down, gap in steps:
        if gaps and gap and close:
            high.append(price)
            low.append(price)
            synthetic.append(True)
        else:
            price = max(0.01, price + change)
            high.append(price + up)
            low.append(max(0.0, price - down))
            synthetic.append(False)
        close.append(price)
    return high, low, close, synthetic


def assert_agree(incremental: list[float], vectorised: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(incremental), np.isnan(vectorised))
    np.testing.assert_allclose(incremental, vectorised, rtol=TOL, atol=TOL, equal_nan=True)


periods = st.integers(1, 30)


@settings(max_examples=60, deadline=None)
@given(histories(), periods)
def test_ema_sma_rsi_agree(history: tuple, n: int) -> None:
    _, _, close, _ = history
    for state, vectorised in (
        (ind.EmaState(n), ind.ema(close, n)),
        (ind.WilderState(n), ind.wilder(close, n)),
        (ind.SmaState(n), ind.sma(close, n)),
        (ind.RsiState(n), ind.rsi(close, n)),
    ):
        assert_agree([state.update(c) for c in close], vectorised)


@settings(max_examples=60, deadline=None)
@given(histories(), periods)
def test_atr_agrees_with_synthetic_bars(history: tuple, n: int) -> None:
    high, low, close, synthetic = history
    state = ind.AtrState(n)
    incremental = [state.update(h, lo, c, s) for h, lo, c, s in zip(high, low, close, synthetic)]
    assert_agree(incremental, ind.atr(high, low, close, n, synthetic))


@settings(max_examples=60, deadline=None)
@given(histories(), st.integers(1, 15), st.integers(1, 40), st.integers(1, 12))
def test_macd_agrees(history: tuple, fast: int, slow: int, signal: int) -> None:
    close = history[2]
    state = ind.MacdState(fast, slow, signal)
    rows = [(state.update(c), state.signal, state.histogram) for c in close]
    result = ind.macd(close, fast, slow, signal)
    for column, vectorised in zip(zip(*rows, strict=True), (result.macd, result.signal, result.histogram)):
        assert_agree(list(column), vectorised)


@settings(max_examples=60, deadline=None)
@given(histories(), st.integers(1, 30), st.floats(0.5, 3))
def test_bollinger_agrees(history: tuple, n: int, k: float) -> None:
    close = history[2]
    state = ind.BollingerState(n, k)
    rows = [(state.update(c), state.upper, state.lower) for c in close]
    bands = ind.bollinger(close, n, k)
    for column, vectorised in zip(zip(*rows, strict=True), (bands.middle, bands.upper, bands.lower)):
        assert_agree(list(column), vectorised)


@settings(max_examples=100, deadline=None)
@given(histories())
def test_macdv_agrees_with_synthetic_bars(history: tuple) -> None:
    high, low, close, synthetic = history
    state = ind.MacdVState()
    rows = []
    for h, lo, c, s in zip(high, low, close, synthetic):
        state.update(h, lo, c, s)
        rows.append((state.value, state.signal, state.histogram, state.atr))
    result = ind.macdv(high, low, close, synthetic)
    vectorised = (result.value, result.signal, result.histogram, result.atr)
    for column, expected in zip(zip(*rows, strict=True), vectorised):
        assert_agree(list(column), expected)
    if close:
        assert state.seeded == result.seeded
        assert state.reason == result.reason
        assert state.stage == ind.macdv_stage(result.value[-1], result.signal[-1])
        assert state.diagnostics == result.diagnostics


def test_macdv_agrees_over_a_long_random_walk() -> None:
    rng = np.random.default_rng(5)
    close = 100 + np.cumsum(rng.normal(0, 0.5, 20_000))
    high = close + rng.uniform(0, 1, close.size)
    low = close - rng.uniform(0, 1, close.size)
    synthetic = rng.random(close.size) < 0.2
    for i in np.flatnonzero(synthetic):  # a gap-filled bar is flat at the previous close
        high[i] = low[i] = close[i] = close[i - 1] if i else 100.0
    state = ind.MacdVState()
    bars = zip(high.tolist(), low.tolist(), close.tolist(), synthetic.tolist())
    values = [state.update(*bar) for bar in bars]
    result = ind.macdv(high, low, close, synthetic)
    assert_agree(values, result.value)
    assert math.isclose(state.signal, result.signal[-1], rel_tol=TOL)
