"""manage.py import_ohlc on sample files in the replaced broker's documented shape (legacy_data/)."""

from datetime import UTC, datetime
from decimal import Decimal as D
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from marketdata.models import Candle, CandleSource
from tests.support.instruments import make_instrument

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "legacy_data"


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_ohlc", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_imports_bars_and_flags_the_implausible_ones() -> None:
    eurusd = make_instrument("EURUSD")
    out = run(str(DATA))
    bars = {(c.timeframe, c.start): c for c in Candle.objects.filter(instrument=eurusd)}
    assert len([k for k in bars if k[0] == "1h"]) == 7 and len([k for k in bars if k[0] == "1m"]) == 3
    first = bars[("1m", datetime(2026, 1, 3, 13, 16, tzinfo=UTC))]
    assert (first.open, first.high, first.low, first.close, first.tick_count, first.source) == (
        D("1.0841"),
        D("1.0845"),
        D("1.0839"),
        D("1.0843"),
        57,
        CandleSource.IMPORT,
    )
    crash = bars[("1h", datetime(2026, 1, 3, 14, tzinfo=UTC))]
    after = bars[("1h", datetime(2026, 1, 3, 15, tzinfo=UTC))]
    assert "median" in crash.suspect and "previous close of 1.0846" in after.suspect
    assert bars[("1h", datetime(2026, 1, 3, 16, tzinfo=UTC))].suspect == ""
    assert "bars: 10 read, 10 added, 0 already stored, 2 suspect, 1 bad" in out
    assert "H1.json:4: EURUSD 1h 2026-01-03 14:00 range" in out
    assert "H1.json:8: high/low do not contain open and close" in out


def test_a_second_run_adds_nothing_and_keeps_stored_bars() -> None:
    eurusd = make_instrument("EURUSD")
    Candle.objects.create(
        instrument=eurusd,
        timeframe="1h",
        start=datetime(2026, 1, 3, 12, tzinfo=UTC),
        open=2,
        high=2,
        low=2,
        close=2,
    )
    assert "bars: 10 read, 9 added, 1 already stored" in run(str(DATA))
    assert "bars: 10 read, 0 added, 10 already stored" in run(str(DATA / "ohlc"))
    assert Candle.objects.get(timeframe="1h", start=datetime(2026, 1, 3, 12, tzinfo=UTC)).close == 2


def test_an_unknown_symbol_is_skipped_or_created_not_tradable() -> None:
    assert "symbols skipped (not instruments; --create-instruments creates them): EURUSD" in run(str(DATA))
    assert not Candle.objects.exists()
    run(str(DATA), "--create-instruments")
    assert Candle.objects.filter(instrument__symbol="EURUSD", instrument__tradable=False).count() == 10
