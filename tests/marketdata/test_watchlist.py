import asyncio
import contextlib
from decimal import Decimal as D
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from kernel.errors import ServiceError
from marketdata.loop import MarketLoop
from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
from marketdata.quotes import SelectedQuote
from marketdata.services import venue_watchlist_change
from tests.fakes.binance import BinanceWsFake
from tests.support.instruments import make_instrument
from tests.support.users import make_staff
from tests.support.waiting import await_until
from users.models import AuditLog


def binance_venue(ws_url: str = "ws://127.0.0.1:9", *, watched: tuple[str, ...] = ("BTCUSDT",)) -> Venue:
    venue = Venue.objects.create(
        code="bn",
        name="Binance",
        kind=VenueKind.BINANCE,
        priority=1,
        config={"ws_url": ws_url, "backoff_base_s": 0.05, "backoff_cap_s": 0.2},
    )
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        VenueSymbol.objects.create(
            venue=venue,
            instrument=make_instrument(symbol, digits=2),
            venue_symbol=symbol,
            enabled=symbol in watched,
        )
    return venue


def watched(venue: Venue) -> list[str]:
    return sorted(venue.symbols.filter(enabled=True).values_list("venue_symbol", flat=True))


@pytest.mark.django_db
def test_symbols_go_on_and_off_the_watchlist_by_venue_name_or_symbol_in_any_case():
    venue = binance_venue()

    change = venue_watchlist_change(venue=venue, add=["ethusdt", "SOLUSDT", "BTCUSDT"], remove=[])

    assert (change.added, change.removed, change.unchanged) == (["ETHUSDT", "SOLUSDT"], [], ["BTCUSDT"])
    assert watched(venue) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    change = venue_watchlist_change(venue=venue, remove=["btcusdt", " SOLUSDT "])
    assert change.removed == ["BTCUSDT", "SOLUSDT"]
    assert watched(venue) == ["ETHUSDT"]


@pytest.mark.django_db
def test_an_unmapped_or_contradictory_name_changes_nothing():
    venue = binance_venue()
    Instrument.objects.create(
        symbol="XRPUSDT",
        base_currency="XRP",
        quote_currency="USDT",
        contract_size=D(1),
        digits=4,
        pip_size=D("0.0001"),
        volume_min=D(1),
        volume_max=D(1000),
        volume_step=D(1),
    )

    with pytest.raises(ServiceError) as caught:
        venue_watchlist_change(venue=venue, add=["ETHUSDT", "XRPUSDT", "DOGEUSDT"], remove=["BTCUSDT"])
    assert caught.value.code == "unknown_symbols" and caught.value.status_code == 400
    assert caught.value.fields == {"add": ["XRPUSDT is not mapped on bn.", "DOGEUSDT is not mapped on bn."]}
    assert "Import them from the venue's catalogue first" in caught.value.message
    assert watched(venue) == ["BTCUSDT"]

    with pytest.raises(ServiceError) as caught:
        venue_watchlist_change(venue=venue, add=["ETHUSDT"], remove=["ethusdt"])
    assert caught.value.code == "invalid_watchlist"
    assert watched(venue) == ["BTCUSDT"]


@pytest.mark.django_db
def test_the_command_changes_the_watchlist_and_audits_the_operator():
    venue = binance_venue()
    ops = make_staff("ops")
    out = StringIO()

    call_command(
        "instruments_import", "bn", "--add", "ETHUSDT", "SOLUSDT", "--remove", "BTCUSDT", "--operator", "ops",
        stdout=out,
    )  # fmt: skip

    assert out.getvalue().strip() == "bn watchlist: added ETHUSDT, SOLUSDT; removed BTCUSDT"
    assert watched(venue) == ["ETHUSDT", "SOLUSDT"]
    entry = AuditLog.objects.get(action="venue.watchlist_change")
    assert entry.actor == ops and entry.details == {"added": ["ETHUSDT", "SOLUSDT"], "removed": ["BTCUSDT"]}
    with pytest.raises(CommandError, match="Not mapped on bn: NOPE"):
        call_command("instruments_import", "bn", "--add", "NOPE")
    with pytest.raises(CommandError, match="no --match, --dry-run or --watch"):
        call_command("instruments_import", "bn", "--add", "BTCUSDT", "--dry-run")
    assert watched(venue) == ["ETHUSDT", "SOLUSDT"]


@pytest.mark.django_db(transaction=True)
async def test_the_running_market_loop_applies_a_watchlist_change_without_a_restart(
    tick_table, thread_db_closed
):
    seen: list[SelectedQuote] = []
    async with BinanceWsFake() as fake:
        venue = await sync_to_async(binance_venue)(fake.url)
        loop = MarketLoop(reload_interval_s=0.2, extra_outputs=[seen.append])
        task = asyncio.create_task(loop.run())
        try:
            await fake.wait_until(lambda: fake.subscribed("btcusdt@bookTicker") == 1)
            assert fake.subscribed("ethusdt@bookTicker") == 0

            await sync_to_async(venue_watchlist_change)(venue=venue, add=["ETHUSDT"], remove=["BTCUSDT"])

            await fake.wait_until(
                lambda: (
                    fake.subscribed("ethusdt@bookTicker") == 1 and fake.subscribed("btcusdt@bookTicker") == 0
                )
            )
            assert fake.paths[-1] == "/stream?streams=ethusdt@bookTicker/ethusdt@trade"
            await fake.book_ticker("ETHUSDT", "3400.10", "2.5", "3400.20", "1.5")
            await await_until(lambda: any(s.symbol == "ETHUSDT" and s.quote for s in seen), timeout_s=5)
            quote = next(s.quote for s in seen if s.symbol == "ETHUSDT" and s.quote)
            assert (quote.venue, quote.bid, quote.ask) == ("bn", D("3400.10"), D("3400.20"))
            assert await fake.book_ticker("BTCUSDT", "95000.00", "1", "95000.10", "1") == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.django_db
def test_a_binance_watchlist_stays_within_one_connections_streams():
    venue = binance_venue()
    names = [f"C{n:04d}USDT" for n in range(510)]
    instruments = Instrument.objects.bulk_create(
        Instrument(
            symbol=name,
            base_currency=name[:5],
            quote_currency="USDT",
            contract_size=D(1),
            digits=2,
            tick_size=D("0.01"),
            pip_size=D("0.01"),
            volume_min=D(1),
            volume_max=D(10),
            volume_step=D(1),
        )
        for name in names
    )
    VenueSymbol.objects.bulk_create(
        VenueSymbol(venue=venue, instrument=i, venue_symbol=i.symbol, enabled=True) for i in instruments
    )
    venue_watchlist_change(venue=venue, add=["ETHUSDT"])  # 512 symbols, 1024 streams: Binance's limit

    with pytest.raises(ServiceError) as caught:
        venue_watchlist_change(venue=venue, add=["SOLUSDT", "C0000USDT"])
    assert caught.value.code == "watchlist_too_long"
    assert caught.value.message == (
        "bn would watch 513 symbols: Binance takes at most 1024 streams per connection, two per symbol "
        "(512 symbols). Nothing was changed."
    )
    assert not VenueSymbol.objects.get(venue=venue, venue_symbol="SOLUSDT").enabled

    venue_watchlist_change(venue=venue, add=["SOLUSDT"], remove=["C0000USDT"])  # a swap fits
    assert venue.symbols.filter(enabled=True).count() == 512
