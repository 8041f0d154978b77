"""`manage.py export_ticks SYMBOL --day YYYY-MM-DD --format csv|parquet [--output PATH]`: one UTC day
of a symbol's stored ticks, prices as exact decimals, times in UTC."""

import csv
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata.selectors import ticks_of_day

COLUMNS = ("ts", "symbol", "venue", "bid", "ask", "bid_size", "ask_size", "seq")
PARQUET_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("symbol", pa.string()),
        ("venue", pa.string()),
        ("bid", pa.decimal128(24, 10)),
        ("ask", pa.decimal128(24, 10)),
        ("bid_size", pa.decimal128(28, 10)),
        ("ask_size", pa.decimal128(28, 10)),
        ("seq", pa.int64()),
    ]
)


class Command(BaseCommand):
    help = "Export one UTC day of a symbol's ticks as CSV (to stdout or a file) or Parquet (to a file)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol")
        parser.add_argument("--day", required=True, type=date.fromisoformat, help="UTC day, YYYY-MM-DD")
        parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
        parser.add_argument("--output", type=Path, help="File to write (default: stdout for csv)")

    def handle(self, *args: Any, **options: Any) -> None:
        symbol: str = options["symbol"].upper()
        day: date = options["day"]
        output: Path | None = options["output"]
        batches = ticks_of_day(symbol=symbol, day=day)
        if options["format"] == "parquet":
            if output is None:
                raise CommandError("--format parquet needs --output FILE")
            count = 0
            with pq.ParquetWriter(output, PARQUET_SCHEMA) as writer:
                for rows in batches:
                    writer.write_table(
                        pa.Table.from_pylist([dict(zip(COLUMNS, r)) for r in rows], PARQUET_SCHEMA)
                    )
                    count += len(rows)
        else:
            stream = output.open("w", newline="", encoding="utf-8") if output else None
            out = csv.writer(stream or self.stdout, lineterminator="\n")
            out.writerow(COLUMNS)
            count = 0
            try:
                for rows in batches:
                    out.writerows((r[0].isoformat(), *r[1:]) for r in rows)
                    count += len(rows)
            finally:
                if stream is not None:
                    stream.close()
        self.stderr.write(f"{count} ticks of {symbol} on {day} exported")
