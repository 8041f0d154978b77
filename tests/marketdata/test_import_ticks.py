"""manage.py import_ticks on sample files in the replaced broker's documented shape (legacy_data/)."""

from datetime import UTC, datetime
from decimal import Decimal as D
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from marketdata.models import Instrument
from tests.support.instruments import make_instrument

# The import commits on connections of its own: the test database is not one open transaction.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tick_table")]

DATA = Path(__file__).parent / "legacy_data"


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_ticks", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def stored() -> list[tuple[datetime, str, str, D, D, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT ts, symbol, venue, bid, ask, seq FROM marketdata_tick ORDER BY symbol, ts")
        return list(cursor.fetchall())


def test_it_imports_ticks_in_utc_and_skips_repeats_and_bad_records() -> None:
    make_instrument("EURUSD")
    make_instrument("GBPUSD")
    out = run(str(DATA))
    assert stored() == [
        (
            datetime(2026, 1, 3, 12, 14, 13, 60465, tzinfo=UTC),
            "EURUSD",
            "oanda",
            D("1.08412"),
            D("1.08419"),
            0,
        ),
        (
            datetime(2026, 1, 3, 12, 14, 13, 512004, tzinfo=UTC),
            "EURUSD",
            "oanda",
            D("1.08415"),
            D("1.08421"),
            0,
        ),
        (
            datetime(2026, 1, 3, 23, 29, 59, 999999, tzinfo=UTC),
            "EURUSD",
            "flexymarkets",
            D("1.08411"),
            D("1.08418"),
            0,
        ),
    ]
    assert "files: 1 imported, 3 skipped" in out
    assert "ticks: 3 read, 3 added, 0 already stored, 1 repeated in a row, 1 bad" in out
    assert "EURUSD/2026-01-03.json:29: not a tick (missing 'bid')" in out
    assert "EURUSD/2026-01-04.json: a Git LFS pointer" in out
    assert "GBPUSD/2026-01-03.json:4: malformed JSON" in out
    assert "symbols skipped (not instruments; --create-instruments creates them): XAUUSD" in out


def test_a_second_run_adds_nothing() -> None:
    make_instrument("EURUSD")
    run(str(DATA))
    first = stored()
    out = run(str(DATA / "ticks"))
    assert stored() == first
    assert "ticks: 3 read, 0 added, 3 already stored" in out


def test_it_creates_unknown_symbols_not_tradable_when_asked() -> None:
    make_instrument("EURUSD")
    out = run(str(DATA), "--create-instruments")
    gold = Instrument.objects.get(symbol="XAUUSD")
    assert (gold.tradable, gold.base_currency, gold.quote_currency, gold.digits) == (False, "XAU", "USD", 2)
    # GBPUSD's only file is malformed: no instrument is made from nothing.
    assert not Instrument.objects.filter(symbol="GBPUSD").exists()
    assert "2 instrument(s) created" not in out and "1 instrument(s) created not tradable" in out
    assert [row[1:3] for row in stored() if row[1] == "XAUUSD"] == [("XAUUSD", "flexymarkets")] * 2


def test_it_refuses_a_path_that_is_not_a_folder(tmp_path: Path) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is not a folder"):
        run(str(tmp_path / "missing"))


def test_a_clean_file_is_imported_whole_and_only_once() -> None:
    make_instrument("XAUUSD", digits=2)
    out = run(str(DATA))
    assert "ticks: 2 read, 2 added, 0 already stored, 0 repeated in a row, 0 bad" in out
    assert stored() == [
        (
            datetime(2026, 1, 3, 12, 14, 13, 60465, tzinfo=UTC),
            "XAUUSD",
            "flexymarkets",
            D("2651.37"),
            D("2651.72"),
            0,
        ),
        (
            datetime(2026, 1, 3, 12, 14, 15, 250001, tzinfo=UTC),
            "XAUUSD",
            "flexymarkets",
            D("2651.4"),
            D("2651.75"),
            0,
        ),
    ]
    assert "ticks: 2 read, 0 added, 2 already stored" in run(str(DATA))


def test_export_gives_the_day_back_as_csv_and_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    make_instrument("XAUUSD", digits=2)
    run(str(DATA))
    out = StringIO()
    call_command("export_ticks", "xauusd", "--day", "2026-01-03", stdout=out, stderr=StringIO())
    assert out.getvalue().splitlines() == [
        "ts,symbol,venue,bid,ask,bid_size,ask_size,seq",
        "2026-01-03T12:14:13.060465+00:00,XAUUSD,flexymarkets,2651.3700000000,2651.7200000000,,,0",
        "2026-01-03T12:14:15.250001+00:00,XAUUSD,flexymarkets,2651.4000000000,2651.7500000000,,,0",
    ]
    target = tmp_path / "xau.parquet"
    call_command(
        "export_ticks",
        "XAUUSD",
        "--day",
        "2026-01-03",
        "--format",
        "parquet",
        "--output",
        str(target),
        stderr=StringIO(),
    )
    table = pq.read_table(target).to_pylist()
    assert [(r["ts"], r["bid"], r["ask"], r["venue"]) for r in table] == [
        (datetime(2026, 1, 3, 12, 14, 13, 60465, tzinfo=UTC), D("2651.37"), D("2651.72"), "flexymarkets"),
        (datetime(2026, 1, 3, 12, 14, 15, 250001, tzinfo=UTC), D("2651.4"), D("2651.75"), "flexymarkets"),
    ]
