import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

import jwt
import pytest

from marketdata.adapters.coinbase import CoinbaseRest, CoinbaseSigner
from marketdata.adapters.oanda import OandaRest
from marketdata.adapters.rest import VenueHttpError
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, fake_candle
from tests.fakes.oanda import OandaFake, fake_mid, fake_volume, trading


def coinbase_client(fake: CoinbaseRestFake, key: CoinbaseKey, **kw: object) -> CoinbaseRest:
    return CoinbaseRest(signer=CoinbaseSigner(key.name, key.private_pem), base_url=fake.url, **kw)  # type: ignore[arg-type]


def account(n: int) -> dict[str, object]:
    return {
        "uuid": f"8bfc20d7-f7c6-4422-bf07-8243ca4169f{n}",
        "name": f"Wallet {n}",
        "currency": f"C{n}",
        "available_balance": {"value": f"{n}.5", "currency": f"C{n}"},
        "default": False,
        "active": True,
        "type": "CRYPTO",
        "ready": True,
        "hold": {"value": "0", "currency": f"C{n}"},
    }


def test_accounts_follow_the_cursor_with_a_fresh_jwt_per_request(
    coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey
) -> None:
    coinbase_rest.accounts = [account(n) for n in range(5)]
    with coinbase_client(coinbase_rest, coinbase_key) as client:
        accounts = client.accounts()
    assert [a["currency"] for a in accounts] == ["C0", "C1", "C2", "C3", "C4"]
    assert [r.arg("cursor") for r in coinbase_rest.requests] == [None, "2", "4"]
    assert len(coinbase_rest.jwt_claims) == 3 and not coinbase_rest.rejected_jwts
    assert {c["uri"] for c in coinbase_rest.jwt_claims} == {
        f"GET {coinbase_rest.host}/api/v3/brokerage/accounts"
    }
    tokens = [r.headers["Authorization"] for r in coinbase_rest.requests]
    assert len(set(tokens)) == 3
    assert {jwt.get_unverified_header(t.removeprefix("Bearer "))["alg"] for t in tokens} == {"ES256"}


def test_orders_are_paged_by_cursor_with_repeated_list_parameters(
    coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey
) -> None:
    coinbase_rest.orders = [
        {
            "order_id": f"o{n}",
            "status": "FILLED" if n % 2 else "OPEN",
            "created_time": f"2026-01-0{n + 1}T00:00:00Z",
        }
        for n in range(7)
    ]
    with coinbase_client(coinbase_rest, coinbase_key) as client:
        orders = client.orders(order_status=["OPEN", "FILLED"], limit=2)
        filled = client.orders(order_status=["FILLED"], start_date="2026-01-03T00:00:00Z")
    assert sorted(o["order_id"] for o in orders) == [f"o{n}" for n in range(7)]
    assert coinbase_rest.requests[0].query["order_status"] == ["OPEN", "FILLED"]
    assert len([r for r in coinbase_rest.requests if r.path.endswith("/batch")]) == 4 + 1
    assert sorted(o["order_id"] for o in filled) == ["o3", "o5"]


def test_candles_come_from_the_public_endpoint_in_windows_of_300_buckets_without_a_key(
    coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey
) -> None:
    end = (int(time.time()) // 60 - 10) * 60
    start = end - 1000 * 60
    pages: list[int] = []
    with coinbase_client(coinbase_rest, coinbase_key) as client:
        bars = client.candles(
            product_id="BTC-USD", symbol="BTCUSD", timeframe="1m", start=start, end=end, on_page=pages.append
        )
    assert len(bars) == 1000
    assert [b.start for b in bars] == list(range(start, end, 60))
    windows = [(int(r.arg("start") or 0), int(r.arg("end") or 0)) for r in coinbase_rest.requests]
    assert [(e - s + 1) // 60 for s, e in windows] == [300, 300, 300, 100] == pages
    assert {r.arg("granularity") for r in coinbase_rest.requests} == {"ONE_MINUTE"}
    expected = fake_candle("BTC-USD", bars[500].start, 60)
    assert (bars[500].open, bars[500].high, bars[500].low, bars[500].close, bars[500].volume) == tuple(
        Decimal(expected[k]) for k in ("open", "high", "low", "close", "volume")
    )
    assert {r.path for r in coinbase_rest.requests} == {"/api/v3/brokerage/market/products/BTC-USD/candles"}
    assert not any(r.headers.get("Authorization") for r in coinbase_rest.requests)


def test_the_bucket_in_progress_is_not_returned_as_a_bar(
    coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey
) -> None:
    now = int(time.time())
    with coinbase_client(coinbase_rest, coinbase_key) as client:
        bars = client.candles(
            product_id="BTC-USD", symbol="BTCUSD", timeframe="5m", start=now - 3600, end=now + 600
        )
    assert bars and all(b.start + 300 <= now for b in bars)


def test_429_with_retry_after_is_honoured_then_succeeds(
    coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey, caplog: pytest.LogCaptureFixture
) -> None:
    coinbase_rest.books = {"BTC-USD": ("95000.01", "95000.35")}
    coinbase_rest.fail_next(
        1, 429, {"error": "RESOURCE_EXHAUSTED", "code": 8, "message": "too many"}, {"Retry-After": "1"}
    )
    started = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="marketdata.adapters.rest"),
        coinbase_client(coinbase_rest, coinbase_key) as client,
    ):
        books = client.best_bid_ask(["BTC-USD"])
    assert time.monotonic() - started >= 1.0
    assert books[0]["bids"][0]["price"] == "95000.01"
    assert len(coinbase_rest.requests) == 2
    assert "venue=coinbase GET /api/v3/brokerage/best_bid_ask -> HTTP 429, retry 1/4 in 1.00 s" in caplog.text
    assert "-> 200" in caplog.text
    assert "Bearer" not in caplog.text and coinbase_key.name not in caplog.text


def test_retries_are_bounded(coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey) -> None:
    coinbase_rest.fail_next(
        10, 429, {"error": "RESOURCE_EXHAUSTED", "code": 8, "message": "slow down"}, {"Retry-After": "0"}
    )
    with (
        coinbase_client(coinbase_rest, coinbase_key, max_retries=2) as client,
        pytest.raises(VenueHttpError) as info,
    ):
        client.accounts()
    assert info.value.status == 429
    assert len(coinbase_rest.requests) == 3


def test_a_client_error_is_not_retried(coinbase_rest: CoinbaseRestFake, coinbase_key: CoinbaseKey) -> None:
    coinbase_rest.revoked = True
    with coinbase_client(coinbase_rest, coinbase_key) as client, pytest.raises(VenueHttpError) as info:
        client.accounts()
    assert (info.value.status, info.value.message) == (401, "Unauthorized")
    assert len(coinbase_rest.requests) == 1


def test_a_jwt_signed_by_another_key_is_refused(coinbase_rest: CoinbaseRestFake) -> None:
    other = CoinbaseKey.generate()
    with coinbase_client(coinbase_rest, other) as client, pytest.raises(VenueHttpError):
        client.accounts()
    assert coinbase_rest.rejected_jwts


def test_oanda_candles_page_by_count_and_skip_the_incomplete_bar(oanda: OandaFake) -> None:
    now = int(time.time())
    oanda.clock = lambda: now  # the venue's "now" is the test's: a minute turning mid-test adds no bar
    start = (now // 60 - 9000) * 60
    with OandaRest(token="oanda-test-token", base_url=oanda.url) as client:
        bars = client.candles(
            instrument="EUR_USD", symbol="EURUSD", timeframe="1m", start=start, end=now + 3600
        )
    expected = [b for b in range(start, now - 59, 60) if trading(b) and b + 60 <= now]
    assert [b.start for b in bars] == expected
    counts = [int(r.arg("count") or 0) for r in oanda.requests]
    assert counts[0] == 5000 and all(c <= 5000 for c in counts)
    assert [r.arg("includeFirst") for r in oanda.requests][:2] == ["true", "false"]
    assert {r.arg("granularity") for r in oanda.requests} == {"M1"}
    assert {r.arg("price") for r in oanda.requests} == {"M"}
    bar = bars[10]
    mid = fake_mid(bar.start, 60)
    assert (bar.open, bar.high, bar.low, bar.close) == tuple(Decimal(mid[k]) for k in "ohlc")
    assert bar.tick_count == fake_volume(bar.start, 60)


def test_oanda_daily_candles_are_aligned_to_utc_midnight(oanda: OandaFake) -> None:
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    with OandaRest(token="oanda-test-token", base_url=oanda.url) as client:
        bars = client.candles(
            instrument="EUR_USD", symbol="EURUSD", timeframe="1d", start=start, end=start + 7 * 86400
        )
    assert [b.start for b in bars] == [start + d * 86400 for d in range(7) if d != 5]
    request = oanda.requests[0]
    assert (request.arg("granularity"), request.arg("dailyAlignment"), request.arg("alignmentTimezone")) == (
        "D",
        "0",
        "UTC",
    )
    assert request.headers["Authorization"] == "Bearer oanda-test-token"


def test_oanda_429_is_retried_after_retry_after(oanda: OandaFake) -> None:
    oanda.fail_next(2, 429, {"errorMessage": "Too many requests"}, {"Retry-After": "0"})
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    with OandaRest(token="oanda-test-token", base_url=oanda.url) as client:
        bars = client.candles(
            instrument="EUR_USD", symbol="EURUSD", timeframe="1h", start=start, end=start + 3 * 3600
        )
    assert len(bars) == 3 and len(oanda.requests) == 3
