"""The data migrations that recompute the stages and bias of stored alerts under Livermore's rules and
fill in the diagnostics of stored MACD-V values, applied with the migration executor to rows
written in the old shape."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from alerts.models import AlertEvent

BEFORE = [("alerts", "0004_indicatorvalue_diagnostics")]
AFTER = [("alerts", "0005_alertevent_livermore_stages")]
BAR = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return BAR + timedelta(seconds=seconds)


def migrated_back(target: list[tuple[str, str]]) -> Iterator[Any]:
    """The database migrated back to `target`, its models at that state; forward again afterwards."""
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    others = [leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] != "alerts"]
    yield executor.loader.project_state([*target, *others]).apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture
def old_schema(transactional_db: Any) -> Iterator[Any]:
    yield from migrated_back(BEFORE)


@pytest.fixture
def schema_without_diagnostics(transactional_db: Any) -> Iterator[Any]:
    yield from migrated_back(AFTER)


def migrate_forward(target: list[tuple[str, str]] = AFTER) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def make_instrument(apps: Any) -> Any:
    return apps.get_model("marketdata", "Instrument").objects.create(
        symbol="BTCUSD",
        base_currency="BTC",
        quote_currency="USD",
        contract_size=Decimal(1),
        digits=2,
        tick_size=Decimal("0.01"),
        pip_size=Decimal("0.01"),
        volume_min=Decimal("0.01"),
        volume_max=Decimal(100),
        volume_step=Decimal("0.01"),
    )


def test_stored_alerts_get_livermore_stages_and_bias(old_schema: Any) -> None:
    apps = old_schema
    instrument = make_instrument(apps)
    user = apps.get_model("users", "User").objects.create(username="alice", password="!")
    rule = apps.get_model("alerts", "AlertRule").objects.create(
        user=user, instrument=instrument, timeframe="5m", kind="macdv"
    )
    rows = [
        # (timeframe, start, value, signal): the stored MACD-V bars of BTCUSD
        ("5m", at(0), "-160", "-150"),  # the alert's own bar: oversold
        ("5m", at(600), "-60", "-40"),  # the second alert's bar: reversing
        ("1h", at(-3600), "20", "10"),  # rebounding (the old rules said neutral)
        ("4h", at(-14400), "120", "130"),  # retracing
        ("4h", at(0), "120", "100"),  # closes after the alert fired: not the alert's frame
        ("15m", at(-1800), "30", "20"),  # rebounding: the frame, one bar behind the latest
        ("15m", at(-900), "33", "25"),
        ("1d", at(-86400), "-80", "-100"),  # rebounding
        ("1m", at(180), "56", "50"),  # neither is the 1m frame (55.5): its signal is not found
        ("1m", at(240), "57", "50"),
    ]
    IndicatorValue = apps.get_model("alerts", "IndicatorValue")
    IndicatorValue.objects.bulk_create(
        IndicatorValue(
            instrument=instrument,
            timeframe=tf,
            start=start,
            name="macdv",
            value=Decimal(value),
            signal=Decimal(signal),
        )
        for tf, start, value, signal in rows
    )
    Event = apps.get_model("alerts", "AlertEvent")

    def event(bar: int, label: str, payload: dict[str, Any]) -> int:
        return Event.objects.create(
            rule=rule, user=user, symbol="BTCUSD", timeframe="5m", bar_start=at(bar), label=label,
            title="t", value=Decimal(-160), direction="down", payload=payload, fired_at=at(bar + 305),
        ).pk  # fmt: skip

    frames = {"1m": 55.5, "5m": -160.0, "15m": 30.0, "1h": 20.0, "4h": 120.0, "1d": -80.0}
    flipped = event(0, "macdv_below_-150", {"frames": frames, "bias": "Bearish", "value_name": "MACD-V"})
    kept = event(600, "macdv_below_-50", {"frames": {"5m": -60.0, "1h": None}, "bias": "Bearish"})
    untouched = event(900, "less_than", {"bias": "Neutral", "value_name": "Value"})

    migrate_forward()

    payload = AlertEvent.objects.get(pk=flipped).payload
    assert payload["stages"] == {
        "1m": "unknown",
        "5m": "oversold",
        "15m": "rebounding",
        "1h": "rebounding",
        "4h": "retracing",
        "1d": "rebounding",
    }
    assert payload["signals"] == {
        "1m": None,
        "5m": -150.0,
        "15m": 20.0,
        "1h": 10.0,
        "4h": 130.0,
        "1d": -100.0,
    }
    # bullish 5m 2 + 15m 3 + 1h 4 + 1d 6 = 15 against bearish 4h 5: the old rules said Bearish
    assert payload["bias"] == "Bullish"
    assert payload["frames"] == frames and payload["value_name"] == "MACD-V"
    assert payload["diagnostics"] is None

    payload = AlertEvent.objects.get(pk=kept).payload
    assert payload["stages"] == {"5m": "reversing", "1h": "unknown"}
    assert payload["bias"] == "Bearish"
    assert AlertEvent.objects.get(pk=untouched).payload == {"bias": "Neutral", "value_name": "Value"}


def test_stored_macdv_values_get_their_diagnostics(schema_without_diagnostics: Any) -> None:
    apps = schema_without_diagnostics
    instrument = make_instrument(apps)
    minutes = [*range(0, 250), *range(290, 300), 1500]  # gaps at 250..289, then a long silence
    apps.get_model("marketdata", "Candle").objects.bulk_create(
        apps.get_model("marketdata", "Candle")(
            instrument=instrument, timeframe="1m", start=at(60 * m), open=1, high=1, low=1, close=1
        )
        for m in minutes
    )
    IndicatorValue = apps.get_model("alerts", "IndicatorValue")

    def value(minute: int, name: str = "macdv", **kwargs: Any) -> int:
        return IndicatorValue.objects.create(
            instrument=instrument, timeframe="1m", start=at(60 * minute), name=name, value=1, **kwargs
        ).pk

    young, gapped, silent = value(30), value(299), value(1500)
    no_candle, other, kept = value(260), value(299, name="ema12"), value(249, n_eff=7, span=9)

    migrate_forward([("alerts", "0006_indicatorvalue_diagnostics_backfill")])

    from alerts.models import IndicatorValue as Current

    def diagnostics(pk: int) -> tuple[int | None, int | None]:
        row = Current.objects.get(pk=pk)
        return row.n_eff, row.span

    assert diagnostics(young) == (31, 31)
    # the last 200 real bars of 299 are 290..299 and 60..249 (as the indicator service counts them)
    assert diagnostics(gapped) == (200, 240)
    # the 1000-bar window of 1500 starts at 501: its only real bar is 1500
    assert diagnostics(silent) == (1, 1)
    assert diagnostics(no_candle) == (None, None)
    assert diagnostics(other) == (None, None)
    assert diagnostics(kept) == (7, 9)
