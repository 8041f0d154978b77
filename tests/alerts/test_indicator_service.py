import json
from decimal import Decimal
from typing import cast

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from alerts.indicators import INDICATOR_NAMES, LOW_TRADING_ACTIVITY, RANGING, UNKNOWN
from alerts.models import IndicatorValue
from alerts.selectors import closed_bars, indicator_cache_key, indicators_latest
from alerts.services import INDICATOR_CACHE_TTL, indicators_update_for_bar
from kernel.errors import ServiceError
from kernel.redis import sync_client
from livermore.asgi import application
from tests.alerts.candle_factory import bar_start, epoch, make_ramp
from tests.support.instruments import make_instrument
from tests.support.users import make_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache() -> None:
    redis = sync_client()
    keys = [indicator_cache_key(s, "1m", n) for s in ("EURUSD", "GBPUSD") for n in INDICATOR_NAMES]
    redis.delete(*keys)


def macdv_row(i: int) -> IndicatorValue:
    return IndicatorValue.objects.get(name="macdv", timeframe="1m", start=bar_start(i))


class TestUpdateForBar:
    def test_it_stores_every_seeded_indicator_of_the_bar(self) -> None:
        make_ramp(make_instrument(), 40)
        indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        row = macdv_row(39)
        assert row.value == Decimal("350.0000000000")
        assert row.signal == Decimal("350.0000000000")
        assert row.histogram == Decimal("0E-10")
        ema12 = IndicatorValue.objects.get(name="ema12", start=bar_start(39))
        assert ema12.value == Decimal("133.5000000000")  # close 139 - (12-1)/2
        assert set(IndicatorValue.objects.values_list("name", flat=True)) == set(INDICATOR_NAMES)

    def test_values_are_quantised_to_ten_places(self) -> None:
        make_ramp(make_instrument(), 40)
        indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        for row in IndicatorValue.objects.all():
            assert row.value.as_tuple().exponent == -10

    def test_it_is_idempotent(self) -> None:
        make_ramp(make_instrument(), 40)
        first = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        second = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        assert first == second
        assert IndicatorValue.objects.count() == len(INDICATOR_NAMES)

    def test_the_macdv_signal_is_null_until_seeded(self) -> None:
        make_ramp(make_instrument(), 40)
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(30))
        row = macdv_row(30)
        assert row.value == Decimal("350.0000000000")
        assert row.signal is None
        assert row.histogram is None
        reading = data["indicators"]["macdv"]
        assert reading["seeded"] is True
        assert reading["signal"] is None
        assert reading["stage"] == UNKNOWN  # no signal yet

    def test_an_unseeded_bar_stores_nothing_and_says_why(self) -> None:
        make_ramp(make_instrument(), 20)
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(19))
        assert not IndicatorValue.objects.filter(name="macdv").exists()
        assert data["indicators"]["macdv"] == {
            "symbol": "EURUSD",
            "timeframe": "1m",
            "name": "macdv",
            "start": bar_start(19).isoformat(),
            "ts": epoch(19),
            "value": None,
            "signal": None,
            "histogram": None,
            "seeded": False,
            "reason": LOW_TRADING_ACTIVITY,  # as Livermore said of any unseeded MACD-V
            "stage": UNKNOWN,
            "diagnostics": {"n_eff": 20, "span": 20, "gap_ratio": 0.0, "liquidity": "high"},
        }
        assert data["indicators"]["sma20"]["stage"] is None
        assert data["indicators"]["sma20"]["diagnostics"] is None
        assert IndicatorValue.objects.filter(name="sma20", start=bar_start(19)).exists()

    def test_gaps_become_synthetic_bars_and_low_activity_delays_the_macdv(self) -> None:
        # 40 minutes with only 20 real bars: 40 bars once gap-filled, too few real ones for ATR26.
        make_ramp(make_instrument(), 40, skip=set(range(10, 30)))
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        macdv = data["indicators"]["macdv"]
        assert macdv["seeded"] is False
        assert macdv["reason"] == LOW_TRADING_ACTIVITY
        assert macdv["diagnostics"] == {"n_eff": 20, "span": 40, "gap_ratio": 0.5, "liquidity": "low"}
        assert not IndicatorValue.objects.filter(name__in=("macdv", "atr26")).exists()
        assert IndicatorValue.objects.filter(name="ema26", start=bar_start(39)).exists()

    def test_a_flat_history_is_ranging(self) -> None:
        instrument = make_instrument()
        make_ramp(instrument, 60)
        instrument.candles.update(open=100, high=100, low=100, close=100)
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(59))
        assert data["indicators"]["macdv"]["value"] == "0E-10"
        assert data["indicators"]["macdv"]["stage"] == RANGING

    def test_a_macdv_at_its_signal_above_50_is_unknown(self) -> None:
        # On the ramp the signal catches up with the constant 350: stored, both are 350.0000000000,
        # neither above nor below it, and outside -50..50: Livermore had no stage for that.
        make_ramp(make_instrument(), 60)
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(59))
        assert data["indicators"]["macdv"]["stage"] == UNKNOWN

    def test_the_macdv_row_keeps_its_diagnostics(self) -> None:
        make_ramp(make_instrument(), 60, skip=set(range(10, 20)))
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(59))
        row = macdv_row(59)
        assert (row.n_eff, row.span) == (50, 60)  # 10 gaps in 60 bars
        assert data["indicators"]["macdv"]["diagnostics"] == {
            "n_eff": 50, "span": 60, "gap_ratio": 10 / 60, "liquidity": "high"
        }  # fmt: skip
        assert IndicatorValue.objects.get(name="ema12", start=bar_start(59)).n_eff is None

    def test_diagnostics_cover_the_last_200_real_bars(self) -> None:
        # 300 minutes, 40 gaps at 250..289: the last 200 real bars are 290..299 and 60..249.
        make_ramp(make_instrument(), 300, skip=set(range(250, 290)))
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(299))
        assert data["indicators"]["macdv"]["diagnostics"] == {
            "n_eff": 200, "span": 240, "gap_ratio": 40 / 240, "liquidity": "high"
        }  # fmt: skip

    def test_it_rejects_an_unknown_symbol(self) -> None:
        with pytest.raises(ServiceError) as caught:
            indicators_update_for_bar(symbol="NOPE", timeframe="1m", start=epoch(0))
        assert (caught.value.code, caught.value.status_code) == ("unknown_symbol", 404)

    def test_it_rejects_an_unknown_timeframe(self) -> None:
        make_instrument()
        with pytest.raises(ServiceError) as caught:
            indicators_update_for_bar(symbol="EURUSD", timeframe="2m", start=epoch(0))
        assert (caught.value.code, caught.value.status_code) == ("invalid_timeframe", 400)

    def test_it_rejects_a_bar_that_is_not_closed_and_stores_nothing(self) -> None:
        make_ramp(make_instrument(), 40)
        with pytest.raises(ServiceError) as caught:
            indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(40))
        assert caught.value.code == "bar_not_closed"
        assert not IndicatorValue.objects.exists()


class TestCache:
    def test_it_caches_the_latest_value_for_a_day(self) -> None:
        make_ramp(make_instrument(), 40)
        data = indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        redis = sync_client()
        cache_key = indicator_cache_key("EURUSD", "1m", "macdv")
        assert json.loads(cast(bytes, redis.get(cache_key))) == data["indicators"]["macdv"]
        assert INDICATOR_CACHE_TTL - 60 < cast(int, redis.ttl(cache_key)) <= INDICATOR_CACHE_TTL == 24 * 3600

    def test_a_reading_cached_under_the_old_rules_shows_the_livermore_stage(self) -> None:
        old = {"name": "macdv", "ts": epoch(9), "value": "20.0000000000", "signal": "10.0000000000"}
        sync_client().set(indicator_cache_key("EURUSD", "1m", "macdv"), json.dumps(old | {"stage": RANGING}))
        reading = indicators_latest(symbol="EURUSD", timeframe="1m")["macdv"]
        assert reading["stage"] == "rebounding" and reading["diagnostics"] is None

    def test_a_late_update_of_an_older_bar_keeps_the_latest_cached(self) -> None:
        make_ramp(make_instrument(), 40)
        indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(39))
        indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(35))
        cached = json.loads(cast(bytes, sync_client().get(indicator_cache_key("EURUSD", "1m", "ema12"))))
        assert cached["ts"] == epoch(39)
        assert IndicatorValue.objects.filter(name="ema12", start=bar_start(35)).exists()


class TestGapFilling:
    def test_closed_bars_loads_the_last_bars_up_to_the_given_one(self) -> None:
        instrument = make_instrument()
        make_ramp(instrument, 30, skip={25, 26})
        bars = closed_bars(instrument=instrument, timeframe="1m", end=epoch(28), limit=5)
        assert [(b.start, b.synthetic, b.close) for b in bars] == [
            (epoch(24), False, Decimal(124)),
            (epoch(25), True, Decimal(124)),
            (epoch(26), True, Decimal(124)),
            (epoch(27), False, Decimal(127)),
            (epoch(28), False, Decimal(128)),
        ]


@pytest.mark.django_db(transaction=True)
class TestStream:
    async def test_subscribers_get_a_snapshot_and_then_each_update(self) -> None:
        user = await sync_to_async(make_client)("trader")
        instrument = await sync_to_async(make_instrument)()
        await sync_to_async(make_ramp)(instrument, 40)
        await sync_to_async(indicators_update_for_bar)(symbol="EURUSD", timeframe="1m", start=epoch(38))
        token = str(AccessToken.for_user(user))
        communicator = WebsocketCommunicator(
            application, "/ws/v1/stream", headers=[(b"authorization", f"Bearer {token}".encode())]
        )
        connected, _ = await communicator.connect()
        assert connected
        try:
            await communicator.send_json_to({"type": "subscribe", "channels": ["indicators:EURUSD:1m"]})
            snapshot = await communicator.receive_json_from(timeout=5)
            assert snapshot["type"] == "snapshot"
            assert snapshot["data"]["macdv"]["ts"] == epoch(38)
            await sync_to_async(indicators_update_for_bar)(symbol="EURUSD", timeframe="1m", start=epoch(39))
            event = await communicator.receive_json_from(timeout=5)
            assert event["type"] == "indicator"
            assert event["channel"] == "indicators:EURUSD:1m"
            assert event["data"]["start"] == bar_start(39).isoformat()
            macdv = event["data"]["indicators"]["macdv"]
            assert (macdv["value"], macdv["stage"]) == ("350.0000000000", "unknown")  # at its signal
            assert macdv["diagnostics"] == {"n_eff": 40, "span": 40, "gap_ratio": 0.0, "liquidity": "high"}
        finally:
            await communicator.disconnect()

    async def test_an_unknown_symbol_or_timeframe_cannot_be_subscribed(self) -> None:
        user = await sync_to_async(make_client)("trader")
        await sync_to_async(make_instrument)()
        token = str(AccessToken.for_user(user))
        communicator = WebsocketCommunicator(
            application, "/ws/v1/stream", headers=[(b"authorization", f"Bearer {token}".encode())]
        )
        await communicator.connect()
        try:
            channels = ["indicators:NOPE:1m", "indicators:EURUSD:7m"]
            await communicator.send_json_to({"type": "subscribe", "channels": channels})
            for channel in channels:
                error = await communicator.receive_json_from(timeout=5)
                assert (error["type"], error["code"], error["channel"]) == (
                    "error",
                    "unknown_channel",
                    channel,
                )
        finally:
            await communicator.disconnect()
