import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask

from kernel.errors import ServiceError
from kernel.redis import sync_client
from livermore.schedules import JOBS, periodic_tasks_sync
from marketdata.backfill import FetchProgress
from marketdata.bars import Bar, bar_to_wire
from marketdata.demo import demo_seed
from marketdata.models import BackfillJob, Candle, Instrument, Venue, VenueKind, VenueSymbol
from marketdata.publisher import candle_cache_key
from marketdata.services import backfill_job_create, backfill_job_run, candles_backfill, candles_warm_up
from marketdata.tasks import backfill_recent_candles
from tests.fakes.binance import BinanceRestFake, fake_kline
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, fake_candle
from tests.fakes.oanda import OandaFake, trading
from tests.support.users import grant, make_staff
from tests.support.waiting import wait_until

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


@pytest.fixture
def binance_venue(btc: Instrument) -> Iterator[Venue]:
    with BinanceRestFake() as fake:
        venue = Venue.objects.create(
            code="bn", name="Binance", kind=VenueKind.BINANCE, config={"rest_url": fake.url}
        )
        VenueSymbol.objects.create(venue=venue, instrument=btc, venue_symbol="btcusdt")
        venue.fake = fake  # type: ignore[attr-defined]
        yield venue


def ohlcv(candle: Candle) -> tuple[Decimal, ...]:
    return (candle.open, candle.high, candle.low, candle.close, candle.volume)


def test_coinbase_bars_come_from_the_public_endpoint_in_300_bucket_windows(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    end = minute(time.time()) - timedelta(minutes=5)
    start = end - timedelta(minutes=800)
    result = candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert (result.fetched, result.added, result.replaced) == (800, 800, 0)
    assert len(coinbase_rest.requests) == 3
    assert not any(r.headers.get("Authorization") for r in coinbase_rest.requests)
    rows = Candle.objects.filter(instrument=btc, timeframe="1m").order_by("start")
    assert rows.count() == 800 and {(r.source, r.venue) for r in rows} == {("backfill", "cb")}
    assert (rows[0].start, rows[799].start) == (start, end - timedelta(minutes=1))
    expected = fake_candle("BTC-USD", int(rows[3].start.timestamp()), 60)
    assert ohlcv(rows[3]) == tuple(Decimal(expected[k]) for k in ("open", "high", "low", "close", "volume"))


def test_coinbase_history_needs_no_credentials(btc: Instrument, coinbase_rest: CoinbaseRestFake) -> None:
    venue = Venue.objects.create(
        code="cb-public", name="Coinbase", kind=VenueKind.COINBASE, config={"rest_url": coinbase_rest.url}
    )
    VenueSymbol.objects.create(venue=venue, instrument=btc, venue_symbol="BTC-USD")
    end = minute(time.time()) - timedelta(hours=1)
    result = candles_backfill(
        instrument=btc, timeframe="5m", start=end - timedelta(hours=2), end=end, venue=venue
    )
    assert result.added == 24


def test_binance_klines_are_stored_with_volume_and_trade_count(btc: Instrument, binance_venue: Venue) -> None:
    fake: BinanceRestFake = binance_venue.fake  # type: ignore[attr-defined]
    end = minute(time.time()) - timedelta(minutes=2)
    start = end - timedelta(minutes=1500)
    result = candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=binance_venue)
    assert (result.fetched, result.added) == (1500, 1500)
    assert [r.arg("limit") for r in fake.requests] == ["1000", "1000"]
    assert {(r.arg("symbol"), r.arg("interval")) for r in fake.requests} == {("BTCUSDT", "1m")}
    bar = Candle.objects.get(instrument=btc, timeframe="1m", start=start + timedelta(minutes=77))
    kline = fake_kline("BTCUSDT", int(bar.start.timestamp()), 60)
    assert ohlcv(bar) == tuple(Decimal(str(v)) for v in kline[1:6])
    assert (bar.tick_count, bar.source, bar.venue) == (kline[8], "backfill", "bn")


def test_a_bar_built_here_is_replaced_by_the_venues_own_once_and_counted(
    btc: Instrument, coinbase_venue: Venue, admin_client: Client
) -> None:
    end = minute(time.time()) - timedelta(minutes=5)
    start = end - timedelta(minutes=30)
    built = Candle.objects.create(
        instrument=btc,
        timeframe="1m",
        start=start + timedelta(minutes=7),
        open=Decimal(1),
        high=Decimal(2),
        low=Decimal("0.5"),
        close=Decimal("1.5"),
        volume=Decimal("3"),
        tick_count=42,
        source="trades",
        venue="cb",
    )
    cache = candle_cache_key("BTCUSD", "1m")
    one, two, half = Decimal(1), Decimal(2), Decimal("0.5")
    cached = bar_to_wire(
        Bar("BTCUSD", "1m", int(built.start.timestamp()), one, two, half, one, source="trades")
    )
    sync_client().zadd(cache, {json.dumps(cached): int(built.start.timestamp())})
    first = candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert (first.added, first.replaced) == (29, 1)
    ((member, score),) = sync_client().zrange(cache, 0, -1, withscores=True)  # replaced, nothing added
    assert score == built.start.timestamp() and json.loads(member)["source"] == "backfill"
    again = candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert (again.added, again.replaced) == (0, 0)
    built.refresh_from_db()
    venue_bar = fake_candle("BTC-USD", int(built.start.timestamp()), 60)
    assert ohlcv(built) == tuple(Decimal(venue_bar[k]) for k in ("open", "high", "low", "close", "volume"))
    assert (built.source, built.venue, built.replaced, built.partial) == ("backfill", "cb", True, False)
    assert Candle.objects.filter(instrument=btc, timeframe="1m").count() == 30
    assert Candle.objects.filter(replaced=True).count() == 1
    live_page = admin_client.get("/admin/marketdata/instrument/live/").content.decode()
    assert '<td id="candles-replaced">1</td>' in live_page


def test_a_bar_backfilled_from_another_venue_and_the_bar_in_progress_are_kept(
    btc: Instrument, coinbase_venue: Venue
) -> None:
    now = datetime.now(UTC)
    start = minute(now.timestamp()) - timedelta(minutes=10)
    other = Candle.objects.create(
        instrument=btc,
        timeframe="1m",
        start=start,
        open=7,
        high=7,
        low=7,
        close=7,
        source="backfill",
        venue="bn",
    )
    current = Candle.objects.create(
        instrument=btc,
        timeframe="1h",
        start=datetime.fromtimestamp(int(now.timestamp()) // 3600 * 3600, UTC),
        open=5,
        high=5,
        low=5,
        close=5,
        source="mid",
        venue="sim",
    )
    candles_backfill(
        instrument=btc, timeframe="1m", start=start, end=start + timedelta(minutes=5), venue=coinbase_venue
    )
    candles_backfill(
        instrument=btc,
        timeframe="1h",
        start=current.start - timedelta(hours=3),
        end=now,
        venue=coinbase_venue,
    )
    other.refresh_from_db()
    current.refresh_from_db()
    assert (other.venue, other.close, current.source, current.close) == ("bn", 7, "mid", 5)


def test_backfill_waits_out_a_429_and_reports_it(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    coinbase_rest.fail_next(
        1, 429, {"error": "RESOURCE_EXHAUSTED", "code": 8, "message": "slow"}, {"Retry-After": "1"}
    )
    end = datetime.fromtimestamp(int(time.time()) // 3600 * 3600, UTC) - timedelta(hours=2)
    started = time.monotonic()
    seen: list[FetchProgress] = []
    result = candles_backfill(
        instrument=btc,
        timeframe="1h",
        start=end - timedelta(hours=10),
        end=end,
        venue=coinbase_venue,
        progress=lambda p: seen.append(FetchProgress(p.pages, p.bars, p.rate_limit_waits)),
    )
    assert result.added == 10 and time.monotonic() - started >= 1.0
    assert len(coinbase_rest.requests) == 2
    assert seen == [FetchProgress(pages=1, bars=10, rate_limit_waits=1)]


def test_oanda_bars_are_paged_by_count_and_the_open_bar_is_left_out(
    oanda_venue: Venue, oanda: OandaFake
) -> None:
    eurusd = Instrument.objects.get(symbol="EURUSD")
    end = datetime.now(UTC) + timedelta(hours=1)
    start = datetime.fromtimestamp(int(time.time()) // 300 * 300, UTC) - timedelta(days=30)
    result = candles_backfill(instrument=eurusd, timeframe="5m", start=start, end=end, venue=oanda_venue)
    now = time.time()
    expected = [b for b in range(int(start.timestamp()), int(now), 300) if trading(b) and b + 300 <= now]
    assert result.added == len(expected) > 5000
    assert len(oanda.requests) == 2
    stored = Candle.objects.filter(instrument=eurusd, timeframe="5m")
    assert stored.count() == result.added and {(c.source, c.venue) for c in stored} == {("backfill", "oa")}
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
    coinbase_rest.fail_next(1, 400, {"error": "INVALID_ARGUMENT", "code": 3, "message": "bad product"})
    with pytest.raises(ServiceError) as info:
        candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert (info.value.code, info.value.status_code) == ("venue_error", 502)
    assert "bad product" in info.value.message
    coinbase_rest.fail_next(1, 200, {"candles": [{"start": "soon", "open": "1"}]})
    with pytest.raises(ServiceError) as info:
        candles_backfill(instrument=btc, timeframe="1m", start=start, end=end, venue=coinbase_venue)
    assert info.value.code == "venue_error"
    assert not Candle.objects.exists()
    assert len(coinbase_rest.requests) == 2  # only the refused calls reached the venue


def test_warm_up_fetches_the_missing_bars_of_every_timeframe_once(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    now = int(time.time())
    have = candles_warm_up(instrument=btc, venue=coinbase_venue, bars=200, now=now)
    assert have == dict.fromkeys(["1m", "5m", "15m", "1h", "4h", "1d"], 200)
    assert len(coinbase_rest.requests) == 6
    assert candles_warm_up(instrument=btc, venue=coinbase_venue, bars=200, now=now) == have
    assert len(coinbase_rest.requests) == 6  # nothing missing: no request
    # A reconnect gap: the bars of 20 minutes are missing, one request fills them again.
    Candle.objects.filter(
        timeframe="1m", start__gte=datetime.fromtimestamp(now - now % 60 - 1200, UTC)
    ).delete()
    assert candles_warm_up(instrument=btc, venue=coinbase_venue, bars=200, now=now)["1m"] == 200
    assert len(coinbase_rest.requests) == 7


def test_warm_up_widens_its_window_over_weekends(oanda_venue: Venue) -> None:
    eurusd = Instrument.objects.get(symbol="EURUSD")
    have = candles_warm_up(instrument=eurusd, venue=oanda_venue, bars=200, timeframes=["1h", "1d"])
    assert have["1h"] >= 200 and have["1d"] >= 200


def test_a_job_records_its_progress_and_runs_once(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    end = minute(time.time()) - timedelta(minutes=1)
    job = backfill_job_create(
        instrument=btc, venue=coinbase_venue, timeframe="1m", start=end - timedelta(minutes=700), end=end
    )
    pages: list[int] = []

    def seen(progress: FetchProgress) -> None:
        pages.append(BackfillJob.objects.get(pk=job.pk).pages)  # saved before we are told

    done = backfill_job_run(job_id=job.pk, progress=seen)
    assert pages == [1, 2, 3]
    assert (done.state, done.pages, done.bars_fetched, done.bars_added, done.bars_replaced) == (
        "done",
        3,
        700,
        700,
        0,
    )
    assert done.started_at is not None and done.finished_at is not None
    assert backfill_job_run(job_id=job.pk).finished_at == done.finished_at  # a redelivered task
    assert len(coinbase_rest.requests) == 3


def test_a_failed_job_says_why(
    btc: Instrument, coinbase_venue: Venue, coinbase_rest: CoinbaseRestFake
) -> None:
    coinbase_rest.fail_next(1, 404, {"error": "NOT_FOUND", "code": 5, "message": "no such product"})
    end = minute(time.time())
    job = backfill_job_create(
        instrument=btc, venue=coinbase_venue, timeframe="1h", start=end - timedelta(days=1), end=end
    )
    done = backfill_job_run(job_id=job.pk)
    assert done.state == "failed" and "no such product" in done.error
    with pytest.raises(ServiceError):
        backfill_job_create(
            instrument=btc, venue=coinbase_venue, timeframe="2m", start=end - timedelta(days=1), end=end
        )


def test_the_beat_job_is_declared_and_seeded() -> None:
    assert any(j.task == "marketdata.tasks.backfill_recent_candles" for j in JOBS)
    periodic_tasks_sync()
    assert PeriodicTask.objects.get(name="backfill recent candles").interval.every == 3600


@pytest.mark.django_db(transaction=True)
def test_the_admin_action_queues_jobs_whose_progress_the_admin_shows(
    coinbase_venue: Venue, admin_client: Client, celery_worker: None
) -> None:
    btc, eth = Instrument.objects.get(symbol="BTCUSD"), Instrument.objects.get(symbol="ETHUSD")
    response = admin_client.post(
        "/admin/marketdata/instrument/",
        {"action": "backfill_candles", "_selected_action": [btc.pk, eth.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "6 backfill job(s) queued" in text and "/admin/marketdata/backfilljob/" in text
    assert "No venue with candle history serves ETHUSD." in text
    wait_until(lambda: not BackfillJob.objects.exclude(state="done").exists())
    assert BackfillJob.objects.count() == 6
    assert set(Candle.objects.filter(instrument=btc).values_list("timeframe", flat=True)) == {
        "1m",
        "5m",
        "15m",
        "1h",
        "4h",
        "1d",
    }
    assert Candle.objects.filter(instrument=btc, timeframe="1m").count() >= 1438
    assert not Candle.objects.filter(instrument=eth).exists()
    page = admin_client.get("/admin/marketdata/backfilljob/").content.decode()
    assert "100 %" in page and 'http-equiv="refresh"' not in page
    job = BackfillJob.objects.get(timeframe="1m")
    assert (job.pages, job.bars_fetched, job.requested_by.username) == (5, job.bars_added, "admin")


def test_a_running_job_list_refreshes_itself(
    btc: Instrument, coinbase_venue: Venue, admin_client: Client
) -> None:
    end = minute(time.time())
    job = backfill_job_create(
        instrument=btc, venue=coinbase_venue, timeframe="1m", start=end - timedelta(minutes=600), end=end
    )
    BackfillJob.objects.filter(pk=job.pk).update(state="running", bars_fetched=300, pages=1)
    page = admin_client.get("/admin/marketdata/backfilljob/").content.decode()
    assert 'http-equiv="refresh"' in page and "50 %" in page


def test_the_backfill_action_needs_its_permission(
    btc: Instrument, coinbase_venue: Venue, client: Client
) -> None:
    staff = make_staff("desk", "marketdata.view_instrument", "marketdata.change_instrument")
    client.force_login(staff)
    page = client.get("/admin/marketdata/instrument/").content.decode()
    assert "backfill_candles" not in page
    client.post("/admin/marketdata/instrument/", {"action": "backfill_candles", "_selected_action": [btc.pk]})
    assert not BackfillJob.objects.exists()
    staff = grant(staff, "marketdata.run_backfill")
    client.force_login(staff)
    assert "backfill_candles" in client.get("/admin/marketdata/instrument/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_beat_job_backfills_each_instrument_from_its_best_venue_with_history(
    coinbase_venue: Venue, oanda: OandaFake, celery_worker: None
) -> None:
    keyless = Venue.objects.create(
        code="oa-nokey", name="OANDA", kind=VenueKind.OANDA, config={"rest_url": oanda.url}
    )
    VenueSymbol.objects.create(
        venue=keyless, instrument=Instrument.objects.get(symbol="EURUSD"), venue_symbol="EUR_USD"
    )
    assert backfill_recent_candles() == 6
    wait_until(lambda: Candle.objects.filter(venue="cb").values("timeframe").distinct().count() == 6)
    assert not oanda.requests
    assert not Candle.objects.exclude(venue="cb").exists()
