import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask

from livermore.errors import ServiceError
from livermore.schedules import JOBS, periodic_tasks_sync
from marketdata.demo import demo_seed
from marketdata.models import Candle, Instrument, Venue, VenueKind, VenueSymbol
from marketdata.services import candles_backfill
from marketdata.tasks import backfill_recent_candles
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, fake_candle
from tests.fakes.fixtures import wait_for
from tests.fakes.oanda import OandaFake, trading

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COINBASE_API_KEY_NAME", "COINBASE_PRIVATE_KEY_PEM", "OANDA_TOKEN", "OANDA_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def btc(db: None) -> Instrument:
    demo_seed()
    return Instrument.objects.get(symbol="BTCUSD")


@pytest.fixture
def coinbase_venue(btc: Instrument, coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey) -> Venue:
    venue = Venue.objects.create(
        code="cb",
        name="Coinbase",
        kind=VenueKind.COINBASE,
        config={"rest_url": coinbase_rest.url},
        credentials=json.dumps(coinbase_key.credentials),
    )
    VenueSymbol.objects.create(venue=venue, instrument=btc, venue_symbol="BTC-USD")
    return venue


@pytest.fixture
def oanda_venue(oanda: OandaFake) -> Venue:
    demo_seed()
    venue = Venue.objects.create(
        code="oa",
        name="OANDA",
        kind=VenueKind.OANDA,
        config={"rest_url": oanda.url, "account_id": oanda.account_id},
        credentials=json.dumps({"token": oanda.token}),
    )
    VenueSymbol.objects.create(
        venue=venue, instrument=Instrument.objects.get(symbol="EURUSD"), venue_symbol="EUR_USD"
    )
    return venue


def minute(ts: float) -> datetime:
    return datetime.fromtimestamp(int(ts) // 60 * 60, UTC)


def test_coinbase_bars_are_stored_across_350_bucket_pages(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    end = minute(time.time()) - timedelta(minutes=5)
    start = end - timedelta(minutes=800)
    assert candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue) == 800
    assert len(coinbase_rest.requests) == 3
    rows = Candle.objects.filter(instrument=btc, timeframe="1m").order_by("start")
    assert rows.count() == 800 and {r.source for r in rows} == {"cb"}
    assert (rows[0].start, rows[799].start) == (start, end - timedelta(minutes=1))
    expected = fake_candle("BTC-USD", int(rows[3].start.timestamp()), 60)
    assert (rows[3].open, rows[3].high, rows[3].low, rows[3].close, rows[3].volume) == tuple(
        Decimal(expected[k]) for k in ("open", "high", "low", "close", "volume")
    )


def test_backfill_is_idempotent_and_never_overwrites_live_bars(
    btc: Instrument, coinbase_venue: Venue
) -> None:
    end = minute(time.time()) - timedelta(minutes=5)
    start = end - timedelta(minutes=30)
    live = Candle.objects.create(
        instrument=btc,
        timeframe="1m",
        start=start + timedelta(minutes=7),
        open=Decimal(1),
        high=Decimal(2),
        low=Decimal("0.5"),
        close=Decimal("1.5"),
        tick_count=42,
    )
    assert candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue) == 29
    assert candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue) == 0
    live.refresh_from_db()
    assert (live.source, live.close, live.tick_count) == ("live", Decimal("1.5"), 42)
    assert Candle.objects.filter(instrument=btc, timeframe="1m").count() == 30


def test_backfill_replaces_a_partial_live_bar_with_the_venues_whole_bar(
    btc: Instrument, coinbase_venue: Venue
) -> None:
    end = minute(time.time()) - timedelta(minutes=5)
    start = end - timedelta(minutes=10)
    partial = Candle.objects.create(
        instrument=btc,
        timeframe="1m",
        start=start + timedelta(minutes=3),
        open=Decimal(1),
        high=Decimal(2),
        low=Decimal("0.5"),
        close=Decimal("1.5"),
        tick_count=4,
        partial=True,  # the market loop started during this minute
    )
    assert candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue) == 10
    partial.refresh_from_db()
    venue_bar = fake_candle("BTC-USD", int(partial.start.timestamp()), 60)
    assert (partial.source, partial.partial) == ("cb", False)
    assert (partial.open, partial.high, partial.low, partial.close) == tuple(
        Decimal(venue_bar[k]) for k in ("open", "high", "low", "close")
    )
    assert candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue) == 0


def test_backfill_waits_out_a_429_and_completes(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    coinbase_rest.fail_next(
        1, 429, {"error": "RESOURCE_EXHAUSTED", "code": 8, "message": "slow"}, {"Retry-After": "1"}
    )
    end = minute(time.time()) - timedelta(hours=2)
    started = time.monotonic()
    added = candles_backfill(
        instrument=btc, timeframe="1h", start=end - timedelta(hours=10), end=end, venue=coinbase_venue
    )
    assert added == 10 and time.monotonic() - started >= 1.0
    assert len(coinbase_rest.requests) == 2


def test_oanda_bars_are_paged_by_count_and_the_open_bar_is_left_out(
    oanda_venue: Venue, oanda: OandaFake
) -> None:
    eurusd = Instrument.objects.get(symbol="EURUSD")
    end = datetime.now(UTC) + timedelta(hours=1)
    start = datetime.fromtimestamp(int(time.time()) // 300 * 300, UTC) - timedelta(days=30)
    added = candles_backfill(instrument=eurusd, timeframe="5m", start=start, end=end, venue=oanda_venue)
    now = time.time()
    expected = [b for b in range(int(start.timestamp()), int(now), 300) if trading(b) and b + 300 <= now]
    assert added == len(expected) > 5000
    assert len(oanda.requests) == 2
    stored = Candle.objects.filter(instrument=eurusd, timeframe="5m")
    assert stored.count() == added and {c.source for c in stored} == {"oa"}
    assert min(c.tick_count for c in stored) >= 10


def test_bad_requests_are_refused_and_store_nothing(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    end = minute(time.time())
    start = end - timedelta(hours=1)
    with pytest.raises(ServiceError) as info:
        candles_backfill(instrument=btc, timeframe="7m", start=start, end=end, venue=coinbase_venue)
    assert (info.value.code, info.value.status_code) == ("invalid_timeframe", 400)
    with pytest.raises(ServiceError) as info:
        candles_backfill(instrument=btc, timeframe="1m", start=end, end=start, venue=coinbase_venue)
    assert info.value.code == "invalid_range"
    eth = Instrument.objects.get(symbol="ETHUSD")
    with pytest.raises(ServiceError) as info:
        candles_backfill(instrument=eth, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert info.value.code == "no_venue_symbol"
    coinbase_rest.revoked = True
    with pytest.raises(ServiceError) as info:
        candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert (info.value.code, info.value.status_code) == ("venue_error", 502)
    assert "401" in info.value.message
    assert not Candle.objects.exists()
    assert not coinbase_rest.requests[:-1]  # only the refused call reached the venue


def test_the_beat_job_is_declared_and_seeded() -> None:
    assert any(j.task == "marketdata.tasks.backfill_recent_candles" for j in JOBS)
    periodic_tasks_sync()
    assert PeriodicTask.objects.get(name="backfill recent candles").interval.every == 3600


@pytest.mark.django_db(transaction=True)
def test_the_admin_action_queues_backfills_that_a_worker_runs(
    coinbase_venue: Venue, admin_client: Client, celery_worker: None
) -> None:
    btc, eth = Instrument.objects.get(symbol="BTCUSD"), Instrument.objects.get(symbol="ETHUSD")
    response = admin_client.post(
        "/admin/marketdata/instrument/",
        {"action": "backfill_candles", "_selected_action": [btc.pk, eth.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "6 backfill job(s) queued." in text
    assert "No Coinbase or OANDA venue with credentials serves ETHUSD." in text
    wait_for(
        lambda: (
            set(Candle.objects.filter(instrument=btc).values_list("timeframe", flat=True))
            == set(["1m", "5m", "15m", "1h", "4h", "1d"])
        )
    )
    wait_for(lambda: Candle.objects.filter(instrument=btc, timeframe="1m").count() >= 1438)
    assert not Candle.objects.filter(instrument=eth).exists()


@pytest.mark.django_db(transaction=True)
def test_the_beat_job_backfills_only_venues_with_credentials(
    coinbase_venue: Venue, oanda: OandaFake, celery_worker: None
) -> None:
    keyless = Venue.objects.create(
        code="oa-nokey", name="OANDA", kind=VenueKind.OANDA, config={"rest_url": oanda.url}
    )
    VenueSymbol.objects.create(
        venue=keyless, instrument=Instrument.objects.get(symbol="EURUSD"), venue_symbol="EUR_USD"
    )
    assert backfill_recent_candles() == 6
    wait_for(lambda: Candle.objects.filter(source="cb").values("timeframe").distinct().count() == 6)
    assert not oanda.requests
    assert not Candle.objects.exclude(source="cb").exists()
