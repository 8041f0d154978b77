"""import_ticks_rows_per_s: `manage.py import_ticks` over the replaced broker's tick day files (6
symbols x 2 days x 50,000 ticks in its documented shape, local offsets, written to a temporary folder),
from the command's start to its summary: reading the JSON, COPY into a staging table and the
idempotent insert into the day partitions. A second run must add nothing. Runs in a database of its
own, dropped at the end."""

import json
import os
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_order_api import _drop_database, bench_env, fresh_database  # noqa: E402
from tests.bench.metric import emit  # noqa: E402

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCAD", "EURGBP")
DAYS = ("2026-01-05", "2026-01-06")
PER_FILE = 50_000


def _write_files(root: Path) -> int:
    rows = 0
    for n, symbol in enumerate(SYMBOLS):
        folder = root / "ticks" / symbol
        folder.mkdir(parents=True)
        for day in DAYS:
            ticks = []
            for i in range(PER_FILE):
                bid = round(1.08 + n * 0.1 + (i % 997) * 1e-5, 5)
                seconds = i * 86_000 / PER_FILE
                ticks.append(
                    {
                        "broker_id": "default",
                        "symbol": symbol,
                        "bid": bid,
                        "ask": round(bid + 7e-5, 5),
                        "spread": 7.000000000006,
                        "timestamp": f"{day}T{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:"
                        f"{seconds % 60:09.6f}+05:30",
                        "lp": "OANDA",
                    }
                )
            (folder / f"{day}.json").write_text(json.dumps(ticks))
            rows += len(ticks)
    return rows


def main() -> None:
    fresh_database(bench_env("import-ticks"))
    try:
        from decimal import Decimal

        from django.core.management import call_command

        from marketdata.models import Instrument

        for symbol in SYMBOLS:
            Instrument.objects.create(
                symbol=symbol,
                base_currency=symbol[:3],
                quote_currency=symbol[3:],
                contract_size=Decimal(100_000),
                digits=5,
                pip_size=Decimal("0.0001"),
                volume_min=Decimal("0.01"),
                volume_max=Decimal(100),
                volume_step=Decimal("0.01"),
            )
        with tempfile.TemporaryDirectory() as tmp:
            rows = _write_files(Path(tmp))
            out = StringIO()
            began = time.perf_counter()
            call_command("import_ticks", tmp, stdout=out, stderr=StringIO())
            elapsed = time.perf_counter() - began
            assert f"ticks: {rows} read, {rows} added" in out.getvalue(), out.getvalue()
            again = StringIO()
            call_command("import_ticks", tmp, stdout=again, stderr=StringIO())
            assert f"ticks: {rows} read, 0 added, {rows} already stored" in again.getvalue(), again.getvalue()
        emit("import_ticks_rows_per_s", rows / elapsed, "rows/s", ">= 100000")
    finally:
        _drop_database()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
    main()
