import io
import re
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from marketdata.models import BackfillJob, Candle, Instrument, Venue, VenueKind, VenueSymbol
from tests.fakes.coinbase import CoinbaseRestFake
from tests.support.instruments import make_instrument

pytestmark = pytest.mark.django_db


@pytest.fixture
def btc(coinbase_rest: CoinbaseRestFake) -> Instrument:
    btc = make_instrument("BTCUSD", digits=2)
    venue = Venue.objects.create(
        code="cb", name="Coinbase", kind=VenueKind.COINBASE, config={"rest_url": coinbase_rest.url}
    )
    VenueSymbol.objects.create(venue=venue, instrument=btc, venue_symbol="BTC-USD")
    return btc


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("backfill", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_backfills_the_timeframes_asked_with_a_progress_bar_and_records_the_jobs(btc: Instrument) -> None:
    out, err = run("btcusd", "--tf", "1m,1h", "--days", "1")
    fetched = re.search(r"BTCUSD 1m from cb: (\d+) fetched, \1 added, 0 replaced in 5 page\(s\)", out)
    assert fetched is not None and 1438 <= int(fetched.group(1)) <= 1440
    assert "BTCUSD 1h from cb:" in out and "0 rate-limit wait(s)" in out
    assert "BTCUSD 1m" in err and "pages=5" in err  # tqdm's bar, with the pages and waits
    jobs = BackfillJob.objects.order_by("timeframe")
    assert [(j.timeframe, j.state, j.venue.code) for j in jobs] == [
        ("1h", "done", "cb"),
        ("1m", "done", "cb"),
    ]
    assert Candle.objects.filter(instrument=btc, timeframe="1m").count() >= 1438
    assert set(Candle.objects.values_list("timeframe", flat=True)) == {"1m", "1h"}
    assert Candle.objects.filter(volume__gt=Decimal(0)).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("NOPE",), "unknown symbol"),
        (("BTCUSD", "--tf", "1m,2m"), "--tf takes timeframes"),
        (("BTCUSD", "--days", "0"), "--days must be"),
        (("BTCUSD", "--venue", "nowhere"), "unknown venue"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_stored(
    btc: Instrument, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not BackfillJob.objects.exists() and not Candle.objects.exists()


def test_a_venue_without_history_is_refused(btc: Instrument) -> None:
    Venue.objects.create(code="sim", name="Simulator", kind=VenueKind.SIMULATOR)
    with pytest.raises(CommandError, match="has no candle history"):
        run("BTCUSD", "--venue", "sim")


def test_a_venue_error_fails_the_command_and_its_job(
    btc: Instrument, coinbase_rest: CoinbaseRestFake
) -> None:
    coinbase_rest.fail_next(1, 404, {"error": "NOT_FOUND", "code": 5, "message": "no such product"})
    with pytest.raises(CommandError, match="1 of 1 timeframe"):
        run("BTCUSD", "--tf", "1d", "--days", "30")
    assert BackfillJob.objects.get().error.endswith("no such product")
