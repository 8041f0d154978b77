"""Coinbase's official SDK (coinbase-advanced-py) against our fake: its RESTClient signs with its own
JWT code, sends its own query encoding over HTTPS, and parses the fake's answers into its typed
responses. What it parses is what our sync reads, so the fake's shapes are the real ones."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from coinbase.rest import RESTClient

from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake

from .test_portfolio_value import FILLS
from .test_sync import order


@pytest.fixture
def tls_fake(coinbase_key: CoinbaseKey) -> Iterator[tuple[CoinbaseRestFake, Path]]:
    fake = CoinbaseRestFake(coinbase_key, page_size=4)
    fake.tls = True
    with fake:
        yield fake, Path(fake.ca_file)


@pytest.fixture
def sdk(
    tls_fake: tuple[CoinbaseRestFake, Path], coinbase_key: CoinbaseKey, monkeypatch: pytest.MonkeyPatch
) -> RESTClient:
    fake, cert = tls_fake
    # requests lets this variable override a session's own `verify`, so trust the fake through it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    return RESTClient(api_key=coinbase_key.name, api_secret=coinbase_key.private_pem, base_url=fake.host)


def test_the_sdk_reads_the_fakes_best_bid_ask(
    tls_fake: tuple[CoinbaseRestFake, Path], sdk: RESTClient
) -> None:
    fake, _ = tls_fake
    fake.books = {"BTC-USD": ("41000.5", "41001"), "ETH-BTC": ("0.052", "0.0521")}
    answer = sdk.get_best_bid_ask(product_ids=["BTC-USD", "ETH-BTC", "NOPE-USD"])
    books = {b.product_id: b for b in answer.pricebooks}
    assert set(books) == {"BTC-USD", "ETH-BTC"}
    assert (books["BTC-USD"].bids[0].price, books["BTC-USD"].asks[0].price) == ("41000.5", "41001")
    assert books["ETH-BTC"].time.endswith("Z")
    (request,) = fake.requests
    assert request.query["product_ids"] == ["BTC-USD", "ETH-BTC", "NOPE-USD"]  # repeated keys
    assert request.headers["User-Agent"].startswith("coinbase-advanced-py/")
    assert fake.jwt_claims[0]["uri"] == f"GET {fake.host}/api/v3/brokerage/best_bid_ask"
    assert not fake.rejected_jwts


def test_the_sdk_pages_through_the_fakes_fills(
    tls_fake: tuple[CoinbaseRestFake, Path], sdk: RESTClient
) -> None:
    fake, _ = tls_fake
    fake.fills = list(FILLS)
    first = sdk.get_fills()
    assert len(first.fills) == 4 and first.cursor == "4"
    rest = sdk.get_fills(cursor=first.cursor)
    assert len(rest.fills) == 2 and rest.cursor == ""
    fills = {f.entry_id: f for f in [*first.fills, *rest.fills]}
    assert len(fills) == 6
    quote_sized = fills["entry-004"]
    assert (quote_sized.size, quote_sized.price, quote_sized.size_in_quote) == ("3500", "35000", True)
    assert (quote_sized.commission, quote_sized.side, quote_sized.trade_type) == ("3.5", "BUY", "FILL")
    assert [f.sequence_timestamp for f in first.fills] == sorted(
        (f.sequence_timestamp for f in first.fills), reverse=True
    )
    later = sdk.get_fills(start_sequence_timestamp="2026-01-05T10:05:00Z", product_ids=["ETH-BTC", "SOL-EUR"])
    assert sorted(f.product_id for f in later.fills) == ["ETH-BTC", "SOL-EUR"]


def test_the_sdk_lists_cancelled_and_expired_orders_from_the_fake(
    tls_fake: tuple[CoinbaseRestFake, Path], sdk: RESTClient
) -> None:
    fake, _ = tls_fake
    fake.orders = [
        order("o-1", "CANCELLED", "2026-01-05T10:01:00Z", filled_size="0.5"),
        order("o-2", "EXPIRED", "2026-01-05T10:02:00Z", filled_size="0.6"),
        order("o-3", "OPEN", "2026-01-05T10:03:00Z"),
    ]
    answer = sdk.list_orders(order_status=["CANCELLED", "EXPIRED"])
    assert {(o.order_id, o.status, o.filled_size) for o in answer.orders} == {
        ("o-1", "CANCELLED", "0.5"),
        ("o-2", "EXPIRED", "0.6"),
    }
    assert answer.has_next is False
    with pytest.raises(Exception, match="400 Client Error"):
        sdk.list_orders(order_status=["DONE"])
