"""A closed bar's whole path: indicators computed and stored, then the bar-close rules on them."""

from decimal import Decimal
from typing import Any

import pytest

from alerts.models import AlertEvent, AlertRule, AlertSeriesState, IndicatorValue
from alerts.services import bar_close_handle
from marketdata.models import Candle
from tests.support.instruments import make_instrument

from .candle_factory import bar_start, epoch, make_ramp

pytestmark = pytest.mark.django_db


def test_indicator_rules_fire_on_the_indicators_the_bar_produced(alice: Any) -> None:
    """On the ramp close = 100 + i the MACD-V is 350 from bar 25 on (see the golden tests)."""
    eurusd = make_instrument("EURUSD")
    make_ramp(eurusd, 30)
    rule = AlertRule.objects.create(
        user=alice, instrument=eurusd, timeframe="1m", source="macdv", condition="greater_than",
        threshold=Decimal(300), frequency="once_per_bar",
    )  # fmt: skip
    fired = {i: [e.label for e in bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(i))]
             for i in range(20, 30)}  # fmt: skip
    assert all(not fired[i] for i in range(20, 25))
    assert all(fired[i] for i in range(25, 30))
    first = AlertEvent.objects.filter(rule=rule).order_by("bar_start").first()
    assert first is not None and first.bar_start == bar_start(25)
    assert first.value == Decimal(350)
    stored = IndicatorValue.objects.get(instrument=eurusd, timeframe="1m", start=bar_start(29), name="macdv")
    assert abs(stored.value - Decimal(350)) < Decimal("1e-6")


def test_price_rules_read_the_closed_candle(alice: Any) -> None:
    eurusd = make_instrument("EURUSD")
    make_ramp(eurusd, 12)
    AlertRule.objects.create(
        user=alice, instrument=eurusd, timeframe="1m", source="close", condition="crossing_up",
        threshold=Decimal("105.5"), frequency="once_per_bar",
    )  # fmt: skip
    labels = [bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(i)) for i in range(12)]
    fired_at = [i for i, events in enumerate(labels) if events]
    assert fired_at == [6]  # close 105 -> 106 crosses 105.5 once
    assert Candle.objects.get(instrument=eurusd, start=bar_start(6)).close == Decimal(106)


def test_a_redelivered_bar_fires_nothing_twice(alice: Any) -> None:
    eurusd = make_instrument("EURUSD")
    make_ramp(eurusd, 30)
    AlertRule.objects.create(
        user=alice, instrument=eurusd, timeframe="1m", source="macdv", condition="greater_than",
        threshold=Decimal(300), frequency="every_time",
    )  # fmt: skip
    assert bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(26))
    assert bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(26)) == []
    assert AlertEvent.objects.count() == 1


def test_a_bar_handled_before_the_one_before_it_catches_that_one_up_first(alice: Any) -> None:
    """Two workers: bar 31's task runs before bar 30's. The crossing on bar 30 fires on bar 30."""
    eurusd = make_instrument("EURUSD")
    make_ramp(eurusd, 40)
    rule = AlertRule.objects.create(
        user=alice, instrument=eurusd, timeframe="1m", source="close", condition="crossing_up",
        threshold=Decimal("129.5"), frequency="once_per_bar",
    )  # fmt: skip
    for i in range(30):
        assert bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(i)) == []
    caught_up = bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(31))
    assert [(e.bar_start, e.price) for e in caught_up] == [(bar_start(30), Decimal(130))]
    assert IndicatorValue.objects.filter(instrument=eurusd, start=bar_start(30), name="macdv").exists()
    assert bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(30)) == []  # already covered
    assert [e.bar_start for e in AlertEvent.objects.filter(rule=rule)] == [bar_start(30)]
    series = AlertSeriesState.objects.get(symbol="EURUSD", timeframe="1m")
    assert series.history["starts"] == [epoch(i) for i in range(32)]
    assert series.history["history"]["close"] == [100.0 + i for i in range(32)]


def test_a_catch_up_evaluates_only_stored_bars_and_at_most_the_latest_few(alice: Any, settings: Any) -> None:
    settings.ALERTS_BAR_CATCHUP_MAX = 2
    eurusd = make_instrument("EURUSD")
    make_ramp(eurusd, 10, skip={4})
    bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(0))
    bar_close_handle(symbol="EURUSD", timeframe="1m", start=epoch(6))
    series = AlertSeriesState.objects.get(symbol="EURUSD", timeframe="1m")
    assert series.history["starts"] == [epoch(0), epoch(3), epoch(5), epoch(6)]  # bar 4 has no candle
