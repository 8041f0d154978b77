"""Price rules on quotes (the market loop's listener), the alerts stream channel, and the chart."""

import io
import json
import math
import time
from decimal import Decimal
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from PIL import Image

from alerts.charts import render_chart
from alerts.listeners import LiveAlerts
from alerts.models import AlertEvent, AlertRule
from alerts.services import alerts_evaluate_bar_close
from kernel.redis import sync_client
from marketdata.consumers import StreamConsumer
from marketdata.models import Instrument
from marketdata.publisher import ticker_key
from marketdata.quotes import Quote, SelectedQuote

from .conftest import BAR, bar_values, macdv_rule


def quote(symbol: str, mid: str, seq: int, *, tradable: bool = True) -> SelectedQuote:
    ts = (BAR + seq) * 1_000_000_000
    q = Quote(symbol, "sim", Decimal(mid) - 1, Decimal(mid) + 1, ts, ts)
    return SelectedQuote(symbol, seq, q, tradable)


def test_the_alerts_listener_is_registered_with_the_market_loop() -> None:
    assert "alerts.listeners.on_quote" in settings.QUOTE_LISTENERS
    assert settings.STREAM_CHANNELS["alerts"] == "alerts.streams.AlertsChannel"


@pytest.mark.django_db(transaction=True)
def test_live_rules_fire_on_quotes_and_once_means_once(alice: Any, btc: Instrument) -> None:
    every = AlertRule.objects.create(
        user=alice,
        instrument=btc,
        timeframe="1m",
        condition="crossing_up",
        threshold=95000,
        frequency="every_time",
    )
    once = AlertRule.objects.create(
        user=alice,
        instrument=btc,
        timeframe="1m",
        condition="crossing_down",
        threshold=94000,
        frequency="once",
    )
    listener = LiveAlerts()
    listener(quote("BTCUSD", "94900", 0))  # loads the rules in the background
    listener.flush()
    mids = ["94990", "95010", "94990", "95020", "93990", "94100", "93900"]
    started = time.perf_counter()
    for seq, mid in enumerate(mids, start=1):
        listener(quote("BTCUSD", mid, seq))
    per_quote_ms = (time.perf_counter() - started) * 1000 / len(mids)
    listener(quote("BTCUSD", "90000", 99, tradable=False))  # no tradable price: nothing fires
    listener.flush()

    assert per_quote_ms < 5  # decided in memory, database work queued
    assert AlertEvent.objects.filter(rule=every).count() == 2
    (down,) = AlertEvent.objects.filter(rule=once)
    assert down.title == "BTCUSD: Price crossed below 94000 (1m)" and down.price == Decimal("93990")
    once.refresh_from_db()
    assert once.status == AlertRule.Status.TRIGGERED

    # A restarted listener reloads only what may still fire.
    restarted = LiveAlerts()
    restarted(quote("BTCUSD", "94100", 200))
    restarted.flush()
    assert [r.id for r in restarted.rules["BTCUSD"]] == [every.pk]


@pytest.mark.django_db(transaction=True)
def test_after_a_restart_the_first_quote_crosses_from_the_cached_price(alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1m", condition="crossing_up", threshold=95000, frequency="once"
    )
    before_restart = quote("BTCUSD", "94990", 1)
    sync_client().set(ticker_key("BTCUSD"), json.dumps(before_restart.to_wire()), ex=60)
    listener = LiveAlerts()
    listener(quote("ETHUSD", "3000", 2))  # loads the rules in the background
    listener.flush()
    assert listener.last_mid["BTCUSD"] == Decimal("94990")
    listener(quote("BTCUSD", "95010", 3))  # the first BTCUSD quote this process sees
    listener.flush()
    (event,) = AlertEvent.objects.filter(rule=rule)
    assert event.price == Decimal("95010")


@pytest.mark.django_db(transaction=True)
async def test_the_alerts_channel_sends_a_snapshot_then_new_alerts(
    alice: Any, bob: Any, btc: Instrument
) -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(macdv_rule)(alice, btc)
    evaluate = sync_to_async(alerts_evaluate_bar_close)
    await evaluate(symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(-100.0))
    await evaluate(symbol="BTCUSD", timeframe="5m", bar_start=BAR + 300, values=bar_values(-155.0))

    alice_ws = WebsocketCommunicator(StreamConsumer.as_asgi(), "/ws/v1/stream")
    alice_ws.scope["user"] = alice
    bob_ws = WebsocketCommunicator(StreamConsumer.as_asgi(), "/ws/v1/stream")
    bob_ws.scope["user"] = bob
    try:
        for ws in (alice_ws, bob_ws):
            assert (await ws.connect())[0]
            await ws.send_json_to({"type": "subscribe", "channels": ["alerts"]})
        snapshot = await alice_ws.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot" and snapshot["channel"] == "alerts"
        assert [e["label"] for e in snapshot["data"]] == ["macdv_below_-150"]
        assert (await bob_ws.receive_json_from(timeout=5))["data"] == []

        await evaluate(symbol="BTCUSD", timeframe="5m", bar_start=BAR + 600, values=bar_values(-210.0))
        frame = await alice_ws.receive_json_from(timeout=5)
        assert frame["type"] == "alert" and frame["channel"] == "alerts"
        assert frame["data"]["title"] == "BTCUSD: MACD-V crossed below -200 (5m)"
        assert frame["data"]["value"] == "-210.0000000000" and frame["data"]["bias"] == "Bullish"
        assert frame["data"]["stages"]["5m"] == "oversold" and frame["data"]["stages"]["1h"] == "unknown"
        assert await bob_ws.receive_nothing(timeout=0.5)
    finally:
        await alice_ws.disconnect()
        await bob_ws.disconnect()


def test_the_chart_is_an_800_by_500_png() -> None:
    n = 80
    close = [100 + 5 * math.sin(i / 6) for i in range(n)]
    data: dict[str, list[float | None]] = {
        "open": [c - 0.5 for c in close],
        "high": [c + 1 for c in close],
        "low": [c - 1 for c in close],
        "close": list(close),
        "volume": [float(10 + i % 5) for i in range(n)],
        "ema26": list(close),
        "macdv": [None, *(180 * math.sin(i / 8) for i in range(1, n))],
        "macdv_signal": [None, *(170 * math.sin((i - 2) / 8) for i in range(1, n))],
        "macdv_histogram": [None, *(10 * math.cos(i / 8) for i in range(1, n))],
    }
    png = render_chart(
        "BTCUSD: MACD-V crossed below -150 (5m)", data, starts=[BAR + 300 * i for i in range(n)]
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (800, 500))
    image.verify()


def test_a_chart_needs_a_close_series() -> None:
    with pytest.raises(ValueError, match="close"):
        render_chart("empty", {}, starts=[])
