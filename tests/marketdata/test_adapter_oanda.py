import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.oanda import OandaAdapter
from marketdata.quotes import Quote
from tests.fakes.fixtures import fast_backoff, running
from tests.fakes.oanda import OandaFake
from tests.support.waiting import await_until

OANDA_TOKEN = "oanda-test-token"


def make_adapter(
    fake: OandaFake, quotes: list[Quote], token: str = OANDA_TOKEN, **config: object
) -> OandaAdapter:
    venue = VenueConfig(
        code="oa",
        kind="oanda",
        config={"stream_url": fake.url, "account_id": fake.account_id, **config},
        credentials={"token": token},
        symbols={"EUR_USD": "EURUSD", "USD_JPY": "USDJPY"},
    )
    return OandaAdapter(venue, quotes.append, backoff=fast_backoff())


async def test_it_turns_price_lines_into_quotes_from_the_top_of_book(oanda: OandaFake) -> None:
    quotes: list[Quote] = []
    adapter = make_adapter(oanda, quotes)
    async with running(adapter):
        await await_until(lambda: oanda.open_streams == 1)
        oanda.price(
            "EUR_USD",
            [("1.10012", 10000000), ("1.10010", 5000000)],
            [("1.10026", 10000000)],
            at="2026-03-02T10:15:30.123456789Z",
        )
        await await_until(lambda: len(quotes) == 1)
    request = oanda.requests[0]
    assert request.path == f"/v3/accounts/{oanda.account_id}/pricing/stream"
    assert request.arg("instruments") == "EUR_USD,USD_JPY"
    quote = quotes[0]
    assert (quote.symbol, quote.venue) == ("EURUSD", "oa")
    assert (quote.bid, quote.ask) == (Decimal("1.10012"), Decimal("1.10026"))
    assert quote.bid_size == Decimal(10000000)
    expected = int(datetime(2026, 3, 2, 10, 15, 30, tzinfo=UTC).timestamp()) * 10**9 + 123456789
    assert quote.venue_ts == expected


async def test_untradeable_prices_and_empty_books_are_skipped(oanda: OandaFake) -> None:
    quotes: list[Quote] = []
    adapter = make_adapter(oanda, quotes)
    async with running(adapter):
        await await_until(lambda: oanda.open_streams == 1)
        oanda.price("EUR_USD", [("1.1", 1)], [("1.2", 1)], tradeable=False)
        oanda.price("USD_JPY", [], [("150.010", 1000000)])
        oanda.price("USD_JPY", [("150.000", 1000000)], [("150.014", 1000000)])
        await await_until(lambda: len(quotes) == 1)
    assert quotes[0].symbol == "USDJPY"
    assert adapter.skipped == 2 and adapter.stats.malformed == 0


async def test_heartbeats_keep_the_stream_alive_and_silence_reconnects(oanda: OandaFake) -> None:
    adapter = make_adapter(oanda, [], silence_timeout_s=0.6)
    async with running(adapter):
        await await_until(lambda: oanda.open_streams == 1)
        await asyncio.sleep(1.0)  # heartbeats every 0.2 s
        assert oanda.stream_connects == 1
        oanda.silent = True
        await await_until(lambda: oanda.stream_connects == 2, timeout_s=3)
        oanda.silent = False
    assert "SilenceTimeout" in adapter.stats.last_error


async def test_it_reconnects_after_the_stream_drops(oanda: OandaFake) -> None:
    quotes: list[Quote] = []
    adapter = make_adapter(oanda, quotes)
    async with running(adapter):
        await await_until(lambda: oanda.open_streams == 1)
        oanda.drop()
        await await_until(lambda: oanda.stream_connects == 2 and oanda.open_streams == 1)
        oanda.price("EUR_USD", [("1.10012", 1)], [("1.10026", 1)])
        await await_until(lambda: len(quotes) == 1)
    assert adapter.stats.connects == 2 and adapter.stats.disconnects >= 1


async def test_garbage_lines_are_counted_and_survived(oanda: OandaFake) -> None:
    quotes: list[Quote] = []
    adapter = make_adapter(oanda, quotes)
    async with running(adapter):
        await await_until(lambda: oanda.open_streams == 1)
        oanda.send_raw(b"this is not json\n")
        oanda.send_raw(b'{"type":"PRICE","instrument":"EUR_USD","time":"yesterday","bids":[],"asks":[]}\n')
        oanda.price("EUR_USD", [("1.10012", 1)], [("1.10026", 1)])
        await await_until(lambda: len(quotes) == 1)
    assert adapter.stats.malformed == 2 and adapter.stats.connects == 1


async def test_a_rejected_token_fails_the_session_and_is_retried(oanda: OandaFake) -> None:
    adapter = make_adapter(oanda, [], token="wrong")
    async with running(adapter):
        await await_until(lambda: len(oanda.requests) >= 2)
    assert adapter.stats.connects == 0
    assert "HTTP 401" in adapter.stats.last_error
    assert "wrong" not in adapter.stats.last_error
