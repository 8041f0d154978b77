import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from kernel.db import database_conninfo
from livermore.schedules import JOBS
from marketdata import ticks
from marketdata.quotes import Quote, SelectedQuote
from marketdata.tasks import tick_retention
from marketdata.ticks import TickRecorder
from tests.support.stack import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def selected(
    seq: int, *, ts: int | None = None, symbol: str = "EURUSD", tradable: bool = True
) -> SelectedQuote:
    ts = time.time_ns() if ts is None else ts
    bid = D("1.08500") + D(seq) / 100000
    q = Quote(symbol, "sim", bid, bid + D("0.00012"), venue_ts=ts, recv_ts=ts, bid_size=D(3), ask_size=D(4))
    return SelectedQuote(symbol=symbol, seq=seq, quote=q, tradable=tradable)


def stored() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ts, symbol, venue, bid, ask, bid_size, ask_size, seq FROM marketdata_tick ORDER BY seq"
        )
        return cursor.fetchall()


def test_every_tradable_selected_quote_is_written_within_a_second(tick_table):
    recorder = TickRecorder(database_conninfo(), flush_interval_s=0.5)
    recorder.start()
    try:
        ts = time.time_ns()
        recorder(selected(1, ts=ts))
        recorder(selected(2, ts=ts + 1_000))
        recorder(selected(3, tradable=False))  # the last price of an untradable symbol is not a tick
        started = time.monotonic()
        wait_until(lambda: recorder.written == 2, timeout_s=3)
        assert time.monotonic() - started <= 1.0
    finally:
        recorder.stop()
    rows = stored()
    assert [r[7] for r in rows] == [1, 2]
    first = rows[0]
    assert first[0] == ticks.ns_to_datetime(ts)
    assert first[1:7] == ("EURUSD", "sim", D("1.0850100000"), D("1.0851300000"), D(3), D(4))


def test_it_creates_the_day_partitions_it_needs_and_the_next_day_ahead(tick_table):
    recorder = TickRecorder(database_conninfo())
    today = timezone.now().date()
    day = today - timedelta(days=3)
    old = int(datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC).timestamp()) * 1_000_000_000
    recorder(selected(1, ts=old))
    recorder(selected(2, ts=old + 120 * 1_000_000_000))  # past midnight: the next day
    recorder(selected(3))
    assert recorder.flush()
    with connection.cursor() as cursor:
        days = {day for _, day, _ in ticks.partitions_list(cursor)}
        cursor.execute("SELECT tableoid::regclass::text, seq FROM marketdata_tick ORDER BY seq")
        placed = cursor.fetchall()
    next_day = day + timedelta(days=1)
    assert {day, next_day, today, today + timedelta(days=1)} <= days
    assert placed[:2] == [(ticks.partition_name(day), 1), (ticks.partition_name(next_day), 2)]


def test_ticks_dated_far_from_today_are_refused_without_creating_partitions_or_stalling(tick_table):
    recorder = TickRecorder(database_conninfo(), days_ahead=1, days_back=2)
    day_ns = 86_400 * 1_000_000_000
    now = time.time_ns()
    recorder(selected(1, ts=now + 400 * day_ns))  # a venue clock a year ahead
    recorder(selected(2, ts=now - 5 * day_ns))
    recorder(selected(3, ts=now))
    recorder(selected(4, ts=now + day_ns))  # tomorrow: inside the window
    assert recorder.flush()
    assert recorder.rejected == 2 and recorder.buffered == 0
    assert [row[7] for row in stored()] == [3, 4]
    with connection.cursor() as cursor:
        days = sorted(day for _, day, _ in ticks.partitions_list(cursor))
    today = timezone.now().date()
    assert days == [today, today + timedelta(days=1)]


def test_each_commit_observes_the_lag_of_its_oldest_tick(tick_table):
    def lag(sample: str) -> float:
        return REGISTRY.get_sample_value(f"livermore_recorder_lag_seconds_{sample}") or 0.0

    count, total = lag("count"), lag("sum")
    recorder = TickRecorder(database_conninfo())
    now = time.time_ns()
    recorder(selected(1, ts=now - 3_000_000_000))  # three seconds old when committed
    recorder(selected(2, ts=now))
    assert recorder.flush()
    assert lag("count") == count + 1
    assert 3.0 <= lag("sum") - total < 10.0
    assert recorder.flush() and lag("count") == count + 1  # nothing written: nothing observed


def test_stop_flushes_what_is_buffered(tick_table):
    recorder = TickRecorder(database_conninfo(), flush_interval_s=60)
    recorder.start()
    for seq in range(1, 101):
        recorder(selected(seq))
    assert recorder.written == 0
    recorder.stop()
    assert recorder.written == 100
    assert len(stored()) == 100


def test_while_the_database_is_unreachable_it_buffers_up_to_the_bound_and_counts_drops():
    recorder = TickRecorder(f"host=127.0.0.1 port={free_port()} dbname=nothing user=postgres", max_buffer=10)
    for seq in range(1, 16):
        recorder(selected(seq))
    assert not recorder.flush()
    assert recorder.failures == 1 and "OperationalError" in recorder.last_error
    assert recorder.buffered == 10
    assert recorder.dropped == 5
    assert [q.seq for q in recorder._buffer] == list(range(1, 11))  # the oldest are kept, in order


def test_the_retention_job_drops_days_older_than_the_setting(tick_table, settings):
    settings.TICK_RETENTION_DAYS = 7
    today = timezone.now().date()
    old, recent = today - timedelta(days=8), today - timedelta(days=7)
    with connection.cursor() as cursor:
        ticks.partitions_ensure(cursor, [old, recent])
    recorder = TickRecorder(database_conninfo())
    for seq, day in enumerate((old, recent), start=1):
        ts = int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
        recorder(selected(seq, ts=ts))
    assert recorder.flush()

    result = tick_retention()

    assert result["dropped"] == [ticks.partition_name(old)]
    with connection.cursor() as cursor:
        days = {day for _, day, _ in ticks.partitions_list(cursor)}
    assert old not in days
    assert {recent, today, today + timedelta(days=1), today + timedelta(days=2)} <= days
    assert [r[7] for r in stored()] == [2]


def test_the_retention_job_is_scheduled():
    assert any(job.task == "marketdata.tasks.tick_retention" for job in JOBS)


def test_each_batch_keeps_the_last_seq_of_its_symbols(tick_table):
    recorder = TickRecorder(database_conninfo())
    for seq in (1, 2):
        recorder(selected(seq))
    recorder(selected(5, symbol="GBPUSD"))
    assert recorder.flush()
    recorder(selected(1))  # a lower number (a restart that lost its count) never lowers it
    assert recorder.flush()
    with connection.cursor() as cursor:
        assert ticks.last_seqs(cursor, ["EURUSD", "GBPUSD", "USDJPY"]) == {"EURUSD": 2, "GBPUSD": 5}


def partition_indexes(day) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [ticks.partition_name(day)])
        return {row[0].split(" USING ")[1] for row in cursor.fetchall()}


def test_days_that_are_over_are_indexed_by_symbol_and_today_by_time_only(tick_table):
    today = timezone.now().date()
    yesterday = today - timedelta(days=1)
    with connection.cursor() as cursor:
        ticks.partitions_ensure(cursor, [yesterday, today])
    assert partition_indexes(yesterday) == {"brin (ts)", "btree (symbol, ts)"}
    assert partition_indexes(today) == {"brin (ts)"}


def test_the_retention_job_indexes_the_day_that_is_over(tick_table, settings):
    settings.TICK_RETENTION_DAYS = 30
    today = timezone.now().date()
    yesterday = today - timedelta(days=1)
    with connection.cursor() as cursor:
        ticks.partitions_ensure(cursor, [yesterday])
        # As created while it was today.
        cursor.execute(f"DROP INDEX {ticks.partition_name(yesterday)}{ticks.INDEX_SUFFIX}")

    assert tick_retention()["indexed"] == [ticks.partition_name(yesterday)]
    assert partition_indexes(yesterday) == {"brin (ts)", "btree (symbol, ts)"}


# numeric(24, 10) for prices, numeric(28, 10) for sizes: PostgreSQL's own conversion of each value is
# what the recorder's binary COPY must store.
EDGE_PRICES = [
    D("1.08500"),
    D("1.0850000000"),  # equal to the one above, another exponent
    D("0"),
    D("-0"),
    D("0.0000000001"),  # the smallest step of the columns' scale
    D("99999999999999.9999999999"),  # the largest price numeric(24, 10) holds
    D("-37.63"),  # a negative price (a future's)
    D("1E+3"),
    D("123.45678901234"),  # more decimals than the scale: rounded by the column
    D("0.00000000005"),  # half a step: away from zero
    D("-0.00000000005"),
    D("0.123456789012345678901234567890"),
    D("1234.5678"),
    D("10000"),
    D("9999.9999"),
]
EDGE_SIZES = [None, D("999999999999999999.9999999999"), D("0.5"), D("3"), D("1E+6")]


def test_the_binary_copy_stores_what_postgresql_makes_of_each_value(tick_table):
    recorder = TickRecorder(database_conninfo())
    now = time.time_ns()
    sent = []
    for seq, bid in enumerate(EDGE_PRICES, start=1):
        ask = EDGE_PRICES[-seq]
        bid_size, ask_size = EDGE_SIZES[seq % len(EDGE_SIZES)], EDGE_SIZES[(seq * 2) % len(EDGE_SIZES)]
        ts = now - seq * 1_000_999  # nanoseconds that a microsecond timestamp truncates
        symbol, venue = ("XAU/USD", "börse-ä") if seq % 2 else ("EURUSD", "sim")
        recorder(SelectedQuote(symbol, seq, Quote(symbol, venue, bid, ask, ts, ts, bid_size, ask_size), True))
        sent.append((ts, symbol, venue, bid, ask, bid_size, ask_size, seq))
    assert recorder.flush() and recorder.written == len(EDGE_PRICES)

    with connection.cursor() as cursor:
        expected = []
        for ts, symbol, venue, bid, ask, bid_size, ask_size, seq in sent:
            cursor.execute(
                "SELECT %s::numeric(24, 10), %s::numeric(24, 10), %s::numeric(28, 10), %s::numeric(28, 10)",
                [bid, ask, bid_size, ask_size],
            )
            expected.append((ticks.ns_to_datetime(ts), symbol, venue, *cursor.fetchone(), seq))
    # The same digits and scale, not only equal values (1.085 == 1.0850000000).
    assert [tuple(map(str, row)) for row in stored()] == [tuple(map(str, row)) for row in expected]


def test_a_batch_of_many_pieces_keeps_every_row_whole(tick_table):
    recorder = TickRecorder(database_conninfo())
    now = time.time_ns()
    count = 2 * ticks._ENCODE_ROWS + 3  # pieces of the COPY data end and start mid-batch
    for seq in range(1, count + 1):
        recorder(selected(seq, ts=now - seq * 1_000, symbol=("EURUSD", "GBPUSD", "USDJPY")[seq % 3]))
    assert recorder.flush()
    rows = stored()
    assert [row[7] for row in rows] == list(range(1, count + 1))
    assert all(row[0] == ticks.ns_to_datetime(now - row[7] * 1_000) for row in rows)
    assert all(row[3] == D("1.08500") + D(row[7]) / 100000 and row[5:7] == (D(3), D(4)) for row in rows)
    assert {row[1] for row in rows} == {"EURUSD", "GBPUSD", "USDJPY"}


def test_ticks_handed_over_while_the_writer_takes_batches_are_each_written_once(tick_table):
    recorder = TickRecorder(database_conninfo(), flush_interval_s=0.01, batch_size=500)
    count = 20_000
    now = time.time_ns()
    symbols = ("EURUSD", "GBPUSD")
    quotes = [selected(seq, ts=now + seq, symbol=symbols[seq % 2]) for seq in range(1, count + 1)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns as often as the interpreter lets them
    recorder.start()
    try:
        for quote in quotes:  # as the market loop does, while the writer thread takes what is buffered
            recorder(quote)
        wait_until(lambda: recorder.written == count, timeout_s=30)
    finally:
        sys.setswitchinterval(interval)
        recorder.stop()
    assert recorder.buffered == 0 and recorder.dropped == 0
    assert [row[7] for row in stored()] == list(range(1, count + 1))
