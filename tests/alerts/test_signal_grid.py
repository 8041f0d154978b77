"""The signals grid's pure part: the engine's stage and bias per frame, and why a cell is not seeded."""

from datetime import UTC, datetime
from decimal import Decimal

from alerts import rules
from alerts.indicators import LOW_TRADING_ACTIVITY, NOT_ENOUGH_BARS, UNKNOWN, macdv_stage
from alerts.signal_grid import (
    BARS_NEEDED,
    NO_BARS,
    NOT_COMPUTED,
    STAGES,
    Frame,
    signals_from_frames,
)

AT = datetime(2026, 1, 5, tzinfo=UTC)


def frame(tf: str, value: str | None = None, signal: str | None = None, **kw: int) -> Frame:
    return Frame(
        "EURUSD",
        tf,
        AT if value is not None else None,
        None if value is None else Decimal(value),
        None if signal is None else Decimal(signal),
        None if value is None or signal is None else Decimal(value) - Decimal(signal),
        **kw,
    )


def test_the_eight_stage_labels_are_the_engines_and_unknown() -> None:
    assert len(STAGES) == 8
    assert UNKNOWN in STAGES


def test_stage_and_bias_are_the_engines_own() -> None:
    frames = [frame("1m", "120", "100"), frame("1h", "-160", "-140"), frame("1d", "70", "90")]
    signals = signals_from_frames(frames)
    assert [s.stage for s in signals] == [macdv_stage(120, 100), macdv_stage(-160, -140), macdv_stage(70, 90)]
    expected_bias = rules.bias({"1m": (120.0, 100.0), "1h": (-160.0, -140.0), "1d": (70.0, 90.0)})
    assert {s.bias for s in signals} == {expected_bias}


def test_the_bias_is_per_symbol() -> None:
    # EURUSD 1d 120 > 100, 50 < 120 < 150: rallying (bullish 6 > 1.5 x 0). GBPUSD 1d -120 < -100,
    # -150 < -120 < -50: reversing (bearish 6 > 1.5 x 0).
    frames = [
        frame("1d", "120", "100"),
        Frame("GBPUSD", "1d", AT, Decimal(-120), Decimal(-100), Decimal(-20)),
    ]
    assert [(s.symbol, s.bias) for s in signals_from_frames(frames)] == [
        ("EURUSD", "Bullish"),
        ("GBPUSD", "Bearish"),
    ]


def test_seeded_needs_the_value_and_its_signal() -> None:
    seeded, no_signal = signals_from_frames([frame("1m", "10", "5"), frame("5m", "10")])
    assert (seeded.seeded, seeded.reason, seeded.as_of, seeded.stage) == (True, None, AT, "rebounding")
    assert (no_signal.seeded, no_signal.reason, no_signal.stage) == (False, NOT_ENOUGH_BARS, UNKNOWN)


def test_a_value_without_its_signal_has_an_unknown_stage_in_the_band_or_out_of_it() -> None:
    # No signal: neither above nor below it, so not even "ranging" for 10 in -50..50.
    cells = signals_from_frames([frame("1m", "10"), frame("5m", "80"), frame("15m", "-200")])
    assert [(c.stage, c.seeded) for c in cells] == [(UNKNOWN, False), (UNKNOWN, False), (UNKNOWN, False)]


def test_reasons_from_the_stored_bars() -> None:
    cells = signals_from_frames(
        [
            frame("1m"),
            frame("5m", real_bars=5, span_bars=5),
            frame("15m", real_bars=10, span_bars=BARS_NEEDED + 10),
            frame("1h", real_bars=BARS_NEEDED, span_bars=BARS_NEEDED),
        ]
    )
    assert [(c.reason, c.stage, c.seeded, c.value) for c in cells] == [
        (NO_BARS, UNKNOWN, False, None),
        (NOT_ENOUGH_BARS, UNKNOWN, False, None),
        (LOW_TRADING_ACTIVITY, UNKNOWN, False, None),
        (NOT_COMPUTED, UNKNOWN, False, None),
    ]
