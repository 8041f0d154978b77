"""Bar-close evaluation against PostgreSQL: history once per (rule, bar, label), the outbox, and the
MACD-V cooldowns and latches surviving a restart (state is reloaded from the database)."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from alerts import rules
from alerts.models import AlertEvent, AlertRule, AlertSeriesState, Notification, NotificationChannel
from alerts.selectors import macdv_snapshot
from alerts.services import alerts_evaluate_bar_close, alerts_record_live_firings
from alerts.services.indicators import _decimal
from marketdata.models import Instrument

from .conftest import BAR, bar_values, macdv_rule

pytestmark = pytest.mark.django_db
M1 = 60


def close_bars(
    symbol: str, timeframe: str, macdvs: list[tuple[float, float]], *, first: int = 0
) -> list[list[str]]:
    """Closes one bar per (MACD-V, histogram); returns the labels recorded on each bar."""
    step = rules.TIMEFRAME_SECONDS[timeframe]
    return [
        [
            e.label
            for e in alerts_evaluate_bar_close(
                symbol=symbol,
                timeframe=timeframe,
                bar_start=BAR + (first + i) * step,
                values=bar_values(value, hist=hist),
            )
        ]
        for i, (value, hist) in enumerate(macdvs)
    ]


def test_a_macdv_crossing_is_recorded_once_with_an_outbox_row_per_enabled_channel(
    alice: Any, btc: Instrument
) -> None:
    rule = macdv_rule(alice, btc, "5m")
    for name in ("one", "two"):
        NotificationChannel.objects.create(
            user=alice, name=name, webhook_url="https://discord.com/api/webhooks/1/x"
        )
    NotificationChannel.objects.create(
        user=alice, name="off", webhook_url="https://discord.com/api/webhooks/2/y", enabled=False
    )
    assert close_bars("BTCUSD", "5m", [(-120, 0), (-160, -5)]) == [[], ["macdv_below_-150"]]
    event = AlertEvent.objects.get()
    assert (event.rule, event.user, event.title) == (rule, alice, "BTCUSD: MACD-V crossed below -150 (5m)")
    assert event.value == Decimal("-160") and event.price == Decimal("95000")
    assert event.bar_start == datetime.fromtimestamp(BAR + 300, UTC)
    assert event.payload["frames"]["5m"] == -160 and event.payload["frames"]["1h"] is None
    assert event.payload["bias"] == "Bullish"  # 5m oversold, which Livermore counts bullish
    assert event.payload["stages"] == {
        "1m": "unknown", "5m": "oversold", "15m": "unknown", "1h": "unknown", "4h": "unknown", "1d": "unknown"
    }  # fmt: skip
    assert event.payload["signals"]["5m"] == -160 and event.payload["signals"]["1h"] is None
    assert Notification.objects.filter(event=event, status="pending").count() == 2


def test_a_bar_closed_twice_is_evaluated_once(alice: Any, btc: Instrument) -> None:
    AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="5m", condition="greater_than", threshold=Decimal(90000)
    )
    first = alerts_evaluate_bar_close(symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(0))
    again = alerts_evaluate_bar_close(symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(0))
    assert (len(first), again, AlertEvent.objects.count()) == (1, [], 1)


def test_the_history_is_insert_or_ignore_per_rule_bar_and_label(alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice,
        instrument=btc,
        timeframe="1m",
        condition="crossing_up",
        threshold=100,
        frequency="every_time",
    )
    firing = rules.Firing(rule.pk, "BTCUSD", "1m", BAR, "crossing_up@1", "t", 101.0, rules.Direction.UP, BAR)
    assert len(alerts_record_live_firings(firings=[firing], price=Decimal(101))) == 1
    assert alerts_record_live_firings(firings=[firing], price=Decimal(101)) == []
    assert AlertEvent.objects.count() == 1


def test_cooldown_and_latches_survive_a_restart(alice: Any, btc: Instrument) -> None:
    rule = macdv_rule(alice, btc, "1m")
    fired = close_bars("BTCUSD", "1m", [(-120, 0), (-160, -5)])
    assert fired == [[], ["macdv_below_-150"]]
    stored = AlertRule.objects.get(pk=rule.pk)
    assert stored.state["cooldowns"] == {"macdv_below_-150": float(BAR + 2 * M1)}
    assert stored.last_fired_at == datetime.fromtimestamp(BAR + 2 * M1, UTC)

    # A fresh evaluator built only from the database: the re-crossing 2 minutes later is cooled down.
    series = AlertSeriesState.objects.get(symbol="BTCUSD", timeframe="1m").to_state()
    evaluator_rule = AlertRule.objects.get(pk=rule.pk).to_rule("BTCUSD")
    for bar, value in ((2, -140.0), (3, -160.0)):
        assert not rules.evaluate_bar_close(
            [evaluator_rule], series, bar_start=BAR + bar * M1, values=bar_values(value)
        )

    # The services reload the same state on every bar: same outcome, then the latch.
    fired = close_bars("BTCUSD", "1m", [(-140, -1), (-160, -1), (-205, -1), (-190, 15), (-185, 15)], first=2)
    assert fired == [[], [], ["macdv_below_-200"], ["macdv_reversal_oversold"], []]
    stored = AlertRule.objects.get(pk=rule.pk)
    assert stored.state["latch_oversold"] is True
    # The last bar changed the rule's state without firing: its last firing is still the bar before.
    assert stored.last_fired_at == datetime.fromtimestamp(BAR + 6 * M1, UTC)
    # After the 5-minute cooldown the -150 level fires again, and the crossing unlatches the reversal.
    fired = close_bars("BTCUSD", "1m", [(-140, -1), (-160, -1), (-165, -1), (-170, 20)], first=7)
    assert fired == [[], ["macdv_below_-150"], [], ["macdv_reversal_oversold"]]
    assert AlertEvent.objects.count() == 5


def test_a_once_rule_fires_then_is_triggered(alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="5m", source="rsi14", condition="greater_than", threshold=70,
        frequency="once",
    )  # fmt: skip
    for i in range(3):
        alerts_evaluate_bar_close(
            symbol="BTCUSD", timeframe="5m", bar_start=BAR + i * 300, values={**bar_values(0), "rsi14": 75}
        )
    rule.refresh_from_db()
    assert rule.status == AlertRule.Status.TRIGGERED and rule.state["done"] is True
    assert AlertEvent.objects.count() == 1


def test_expired_and_paused_rules_do_not_fire(alice: Any, btc: Instrument) -> None:
    expired = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="5m", condition="greater_than", threshold=1,
        expires_at=datetime.fromtimestamp(BAR, UTC) + timedelta(minutes=1),
    )  # fmt: skip
    AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="5m", condition="greater_than", threshold=1, status="paused"
    )
    assert (
        alerts_evaluate_bar_close(symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(0)) == []
    )
    expired.refresh_from_db()
    assert expired.status == AlertRule.Status.EXPIRED


def test_only_the_rules_of_the_closed_series_are_evaluated(alice: Any, btc: Instrument) -> None:
    eth = Instrument.objects.get(symbol="ETHUSD")
    AlertRule.objects.create(
        user=alice, instrument=eth, timeframe="5m", condition="greater_than", threshold=1
    )
    AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1h", condition="greater_than", threshold=1
    )
    assert (
        alerts_evaluate_bar_close(symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(0)) == []
    )


def test_the_series_keeps_the_history_the_chart_is_drawn_from(alice: Any, btc: Instrument) -> None:
    close_bars("BTCUSD", "15m", [(float(v), 0.0) for v in range(130)])
    row = AlertSeriesState.objects.get(symbol="BTCUSD", timeframe="15m")
    assert len(row.history["starts"]) == rules.CHART_BARS
    assert row.history["history"]["macdv"][-1] == 129.0
    assert set(row.history["history"]) >= {
        "open",
        "high",
        "low",
        "close",
        "volume",
        "ema26",
        "macdv_histogram",
    }


def test_price_rules_compare_prices_as_decimal_exactly(alice: Any, btc: Instrument) -> None:
    """18 significant digits: as floats both closes equal the threshold and nothing would cross."""
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="5m", source="close", condition="crossing_up",
        threshold=Decimal("12345678.0000000001"), frequency="once_per_bar_close",
    )  # fmt: skip
    for i, close in enumerate(["12345678.0000000000", "12345678.0000000001"]):
        fired = alerts_evaluate_bar_close(
            symbol="BTCUSD", timeframe="5m", bar_start=BAR + i * 300, values=bar_values(0.0, close=close)
        )
    (event,) = fired
    assert event.rule == rule and event.price == event.value == Decimal("12345678.0000000001")
    assert event.title == "BTCUSD: CLOSE crossed above 12345678.0000000001 (5m)"
    stored = AlertSeriesState.objects.get(symbol="BTCUSD", timeframe="5m").values["close"]
    assert stored == "12345678.0000000001"  # the previous close comes back exact after a restart


def test_the_bar_close_path_stores_each_firing_as_the_evaluator_made_it(
    alice: Any, bob: Any, btc: Instrument
) -> None:
    # The service stores a bar's firings from their columns; each row holds what the evaluator's
    # `Firing` of it says, in the rules' order, with the bar's price and the series' MACD-V payload.
    rng = random.Random(3)
    closes = [95_000 + 10 * rng.randint(-30, 30) for _ in range(8)]
    for i in range(300):
        owner = alice if i % 2 else bob
        if i % 10 == 0:
            macdv_rule(owner, btc, "5m")
            continue
        source = rng.choice(["price", "ema26", "macdv"])
        base = rng.choice(closes) if source != "macdv" else rng.choice([-150, 0, 150])
        condition = rng.choice(
            ["crossing", "crossing_up", "crossing_down", "greater_than", "less_than", "inside_channel",
             "entering_channel", "exiting_channel", "outside_channel"]
        )  # fmt: skip
        upper = Decimal(base + 40) if "channel" in condition else None
        AlertRule.objects.create(
            user=owner, instrument=btc, timeframe="5m", source=source, condition=condition,
            threshold=Decimal(base + rng.choice([-10, 0, 10])), upper=upper,
            frequency=rng.choice(["once", "once_per_bar_close", "every_time", "once_per_minute"]),
        )  # fmt: skip
    fields = ("rule_id", "user_id", "symbol", "timeframe", "bar_start", "label", "title", "value", "price",
              "direction", "payload")  # fmt: skip
    owners = dict(AlertRule.objects.values_list("pk", "user_id"))
    macdv, changed = 0.0, 0
    for bar, close in enumerate(closes):
        macdv += rng.choice([-120.0, -60.0, 60.0, 120.0])
        values = bar_values(macdv, hist=rng.choice([-20.0, 20.0]), close=str(close))
        start = BAR + bar * 300
        series = AlertSeriesState.objects.filter(symbol="BTCUSD", timeframe="5m").first()
        index = rules.RuleIndex(r.to_rule("BTCUSD") for r in AlertRule.objects.filter(status="active"))
        before = {r.pk: (r.state, r.status, r.last_fired_at) for r in AlertRule.objects.all()}
        touched: set[int] = set()
        firings = list(
            rules.evaluate_bar_close(
                index,
                series.to_state() if series else rules.SeriesState("BTCUSD", "5m"),
                bar_start=start,
                values=values,
                cooldown_s=settings.ALERTS_MACDV_COOLDOWN_S,
                touched=touched,
            )
        )

        events = alerts_evaluate_bar_close(symbol="BTCUSD", timeframe="5m", bar_start=start, values=values)

        snapshot = macdv_snapshot(symbol="BTCUSD")
        expected = [
            (f.rule_id, owners[f.rule_id], f.symbol, f.timeframe, datetime.fromtimestamp(f.bar_start, UTC),
             f.label, f.title, _decimal(f.value), Decimal(close), f.direction.value,
             {**rules.macdv_payload(snapshot, timeframe="5m"),
              "value_name": "MACD-V" if f.label.startswith("macdv") else "Value"})
            for f in firings
        ]  # fmt: skip
        stored = AlertEvent.objects.filter(bar_start=datetime.fromtimestamp(start, UTC)).order_by("pk")
        assert list(stored.values_list(*fields)) == expected, f"bar {bar}"
        assert [tuple(getattr(e, name) for name in fields) for e in events] == expected
        assert [e.pk for e in events] == [e.pk for e in stored]
        # Each rule the bar changed holds its new state, is triggered once done and carries the bar's
        # close as its last firing if it fired; the others are as they were.
        close_at = datetime.fromtimestamp(start + 300, UTC)
        fired = {f.rule_id for f in firings}
        after = {r.pk: (r.state, r.status, r.last_fired_at) for r in AlertRule.objects.all()}
        for rule in index.rules:
            state, status, last_fired_at = before[rule.id]
            if rule.id in touched:
                state = rule.state.to_json()
                status = "triggered" if rule.state.done else status
                last_fired_at = close_at if rule.id in fired else last_fired_at
            assert after[rule.id] == (state, status, last_fired_at), rule.id
        assert touched >= fired
        changed += len(touched)
    assert AlertEvent.objects.count() > 300  # the bars fired plenty
    assert changed > 300 and AlertRule.objects.filter(status="triggered").exists()
