"""tick_recorder_rows_per_s: selected quotes through the tick recorder into PostgreSQL (binary COPY
into the day-partitioned table, each batch under the market lease's fence check, as runmarket
writes them), measured from the first quote handed over to the last row committed. Runs in a
throwaway database next to the configured one, dropped at the end. BENCH_TICKS_UNFENCED=1 leaves the
fence check out (to measure what it costs)."""

import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")

import django

django.setup()

import psycopg  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from kernel.db import database_conninfo  # noqa: E402
from kernel.lease import FENCE_TABLE  # noqa: E402
from marketdata import ticks  # noqa: E402
from marketdata.quotes import Quote, SelectedQuote  # noqa: E402

ROWS = 500_000
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD", "ETHUSD")


def main() -> None:
    server = conninfo_to_dict(database_conninfo())
    bench_db = f"{server['dbname']}_bench_ticks_{os.getpid()}"
    admin = make_conninfo(**{**server, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{bench_db}"')
    try:
        conninfo = make_conninfo(**{**server, "dbname": bench_db})
        with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cursor:
            ticks.tick_table_create(cursor)
            cursor.execute(
                f"CREATE TABLE {FENCE_TABLE} (name varchar(100) PRIMARY KEY, token bigint NOT NULL)"
            )
            cursor.execute(f"INSERT INTO {FENCE_TABLE} VALUES ('market', 1)")  # noqa: S608 (a constant)
        fence = None if os.environ.get("BENCH_TICKS_UNFENCED") else ("market", 1)
        now = time.time_ns()
        quotes = [
            SelectedQuote(
                symbol=SYMBOLS[i % 6],
                seq=i,
                quote=Quote(
                    SYMBOLS[i % 6],
                    "sim",
                    Decimal("1.08500") + Decimal(i % 1000).scaleb(-5),
                    Decimal("1.08512") + Decimal(i % 1000).scaleb(-5),
                    venue_ts=now + i * 1000,
                    recv_ts=now + i * 1000,
                    bid_size=Decimal(i % 50 + 1),
                    ask_size=Decimal(i % 50 + 1),
                ),
                tradable=True,
            )
            for i in range(ROWS)
        ]
        recorder = ticks.TickRecorder(conninfo, flush_interval_s=0.2, max_buffer=ROWS + 1, fence=fence)
        recorder.start()
        began = time.perf_counter()
        for selected in quotes:
            recorder(selected)
        while recorder.written < ROWS:
            time.sleep(0.005)
        elapsed = time.perf_counter() - began
        recorder.stop()
        with psycopg.connect(conninfo) as conn:
            (count,) = conn.execute("SELECT count(*) FROM marketdata_tick").fetchone()  # type: ignore[misc]
        assert count == ROWS and recorder.dropped == 0 and recorder.fenced == 0
        emit("tick_recorder_rows_per_s", ROWS / elapsed, "rows/s", ">= 400000")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
