"""Tick storage: every selected quote in `marketdata_tick`, and the recorder that writes it.

The table is partitioned by range on `ts`, one partition per UTC day (created ahead by the recorder
and the retention job), or a TimescaleDB hypertable with one-day chunks when the extension is
installed. No Django here: the functions take a DB-API cursor (Django's or psycopg's) and the
recorder its own psycopg connection, so it runs in a thread off the market loop.
"""

import logging
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.copy import QueuedLibpqWriter
from psycopg.pq import Format
from psycopg.types.numeric import DecimalBinaryDumper

from kernel import metrics
from kernel.lease import StaleFence, fence_check
from marketdata.quotes import SelectedQuote

log = logging.getLogger(__name__)

TABLE = "marketdata_tick"
PARTITION_PREFIX = f"{TABLE}_p"
DAY_NS = 86_400 * 1_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLUMNS = ("ts", "symbol", "venue", "bid", "ask", "bid_size", "ask_size", "seq")
COPY_SQL = f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = ("timestamptz", "text", "text", "numeric", "numeric", "numeric", "numeric", "int8")

# (venue ts in epoch ns, symbol, venue, bid, ask, bid size, ask size, seq): COPY_SQL's columns, in order
TickRow = tuple[int, str, str, Decimal, Decimal, Decimal | None, Decimal | None, int]

_COLUMNS_SQL = """
    ts timestamptz NOT NULL,
    symbol varchar(20) NOT NULL,
    venue varchar(32) NOT NULL,
    bid numeric(24, 10) NOT NULL,
    ask numeric(24, 10) NOT NULL,
    bid_size numeric(28, 10),
    ask_size numeric(28, 10),
    seq bigint NOT NULL
"""


def timescale_installed(cursor: Any) -> bool:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return cursor.fetchone() is not None


def tick_table_create(cursor: Any) -> None:
    """Create the tick table: a hypertable when TimescaleDB is installed, else day partitions."""
    if timescale_installed(cursor):
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS_SQL})")
        cursor.execute(
            f"SELECT create_hypertable('{TABLE}', 'ts', chunk_time_interval => interval '1 day', "
            "if_not_exists => true)"
        )
    else:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS_SQL}) PARTITION BY RANGE (ts)")
    cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_symbol_ts ON {TABLE} (symbol, ts)")


def tick_table_drop(cursor: Any) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")


def is_partitioned(cursor: Any) -> bool:
    """True for declarative day partitions, False for a hypertable (chunks are TimescaleDB's job)."""
    cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s AND relkind IN ('p', 'r')", [TABLE])
    row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partitions_ensure(cursor: Any, days: Iterable[date]) -> list[str]:
    """Create the day partitions that do not exist yet; returns their names."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        [TABLE],
    )
    existing = {row[0] for row in cursor.fetchall()}
    created = []
    for day in sorted(set(days)):
        name = partition_name(day)
        if name in existing:
            continue
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
        )
        created.append(name)
    return created


def partitions_list(cursor: Any) -> list[tuple[str, date, int]]:
    """(name, day, rows as the statistics collector counts them) of every day partition, oldest first."""
    cursor.execute(
        "SELECT c.relname, COALESCE(s.n_live_tup, 0) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE p.relname = %s ORDER BY c.relname",
        [TABLE],
    )
    result = []
    for name, rows in cursor.fetchall():
        if name.startswith(PARTITION_PREFIX):
            day = date.fromisoformat(name.removeprefix(PARTITION_PREFIX))
            result.append((name, day, max(int(rows), 0)))
    return result


def ticks_drop_before(cursor: Any, day: date) -> list[str]:
    """Drop whole days of ticks before `day` (partitions, or hypertable chunks)."""
    if not is_partitioned(cursor):
        cutoff = datetime(day.year, day.month, day.day, tzinfo=UTC)
        cursor.execute(f"SELECT drop_chunks('{TABLE}', older_than => %s)", [cutoff])
        return [str(row[0]) for row in cursor.fetchall()]
    dropped = []
    for name, partition_day, _ in partitions_list(cursor):
        if partition_day < day:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    return dropped


def last_seqs(cursor: Any, symbols: Sequence[str], *, recent: int = 1000) -> dict[str, int]:
    """The highest stored seq of each symbol among its `recent` latest ticks (by the (symbol, ts)
    index: no scan of older days), for symbols with any."""
    cursor.execute(
        f"SELECT s.symbol, (SELECT max(r.seq) FROM (SELECT t.seq FROM {TABLE} t WHERE t.symbol = s.symbol "  # noqa: S608 (a constant)
        "ORDER BY t.ts DESC LIMIT %s) r) FROM unnest(%s::text[]) AS s(symbol)",
        [recent, list(symbols)],
    )
    return {symbol: int(seq) for symbol, seq in cursor.fetchall() if seq is not None}


def ns_to_datetime(ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ns // 1000)


def day_of(ns: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ns // DAY_NS)


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
_pack_int8 = struct.Struct(">q").pack
_dump_decimal = DecimalBinaryDumper(Decimal).dump


class _EpochNsTimestamptzDumper(Dumper):
    """An int of epoch nanoseconds as a binary timestamptz (microseconds, truncated as the datetime
    it stands for would be): no datetime made per tick."""

    format = Format.BINARY
    oid = postgres.types["timestamptz"].oid

    def dump(self, obj: int) -> bytes:
        return _pack_int8(obj // 1000 - _PG_EPOCH_US)


class _RepeatedNumericDumper(Dumper):
    """A Decimal as a binary numeric, each value encoded once per COPY: ticks repeat their prices
    and sizes, and encoding a Decimal is most of a tick's cost. Equal Decimals may differ in
    exponent (1.0, 1.00); the columns' fixed scale stores them alike."""

    format = Format.BINARY
    oid = postgres.types["numeric"].oid

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        self.encoded: dict[Decimal, Buffer | None] = {}

    def dump(self, obj: Decimal) -> Buffer | None:
        try:
            return self.encoded[obj]
        except KeyError:
            data = self.encoded[obj] = _dump_decimal(obj)
            return data


def copy_adapters(conn: psycopg.Connection[Any]) -> None:
    """Make COPY_SQL (with COPY_TYPES) on `conn` take TickRows as they are."""
    conn.adapters.register_dumper(None, _EpochNsTimestamptzDumper)
    conn.adapters.register_dumper(None, _RepeatedNumericDumper)


class TickRecorder:
    """An LP manager output: buffers selected quotes and writes them with binary COPY from a thread.

    Flushes every `flush_interval_s` or as soon as `batch_size` rows wait. When PostgreSQL is down it
    keeps what it holds and retries with backoff; past `max_buffer` rows, new ticks are dropped and
    counted in `dropped`. `stop()` flushes what is buffered before returning. A tick dated outside
    [today - days_back, today + days_ahead] is counted in `rejected` and not written, so one bad
    venue clock can neither create partitions without bound nor fail every batch it is in.

    `fence` (lease name, number): each batch commits only if no newer leader recorded its fence
    (checked after the COPY, in its transaction); a refused batch is dropped and counted in
    `fenced`. A transaction left idle by a frozen process is ended by the server after
    IDLE_IN_TRANSACTION_S, so it never holds up the next leader for longer.
    """

    IDLE_IN_TRANSACTION_S = 3

    def __init__(
        self,
        conninfo: str,
        *,
        flush_interval_s: float = 0.5,
        batch_size: int = 20_000,
        max_buffer: int = 1_000_000,
        days_ahead: int = 1,
        days_back: int = 30,
        retry_max_s: float = 5.0,
        fence: tuple[str, int] | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.fence = fence
        self.fenced = 0
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self.days_ahead = days_ahead
        self.days_back = days_back
        self.retry_max_s = retry_max_s
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.failures = 0
        self.last_error = ""
        self._buffer: list[TickRow] = []
        self._inflight: list[TickRow] = []  # taken from the buffer, not yet committed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._partitioned: bool | None = None
        self._days: set[date] = set()

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._inflight)

    def __call__(self, selected: SelectedQuote) -> None:
        q = selected.quote
        if q is None or not selected.tradable:
            return
        self.add((q.venue_ts, selected.symbol, q.venue, q.bid, q.ask, q.bid_size, q.ask_size, selected.seq))

    def add(self, row: TickRow) -> None:
        with self._lock:
            if len(self._buffer) + len(self._inflight) >= self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append(row)
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()

    def stats(self) -> dict[str, object]:
        return {
            "written": self.written,
            "buffered": self.buffered,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "failures": self.failures,
            "fenced": self.fenced,
            "last_error": self.last_error,
        }

    # -- the writer thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tick-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is buffered (one last try) and end the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.buffered:
            log.error("tick recorder stopped with %d unwritten ticks", self.buffered)

    def _run(self) -> None:
        delay = 0.0
        while True:
            stopping = self._stopping.is_set()
            if not stopping:
                self._wake.wait(delay or self.flush_interval_s)
                self._wake.clear()
            delay = 0.0 if self.flush() else min(max(delay * 2, 0.25), self.retry_max_s)
            if stopping:
                break
        self._close()

    def flush(self) -> bool:
        """Write everything buffered. False if PostgreSQL failed (the rows stay buffered)."""
        with self._lock:
            if self._buffer:
                self._inflight.extend(self._buffer)
                self._buffer = []
        try:
            while self._inflight:
                chunk = self._inflight[: self.batch_size * 5]
                rows = self._in_window(chunk)
                try:
                    if rows:
                        self._write(rows)
                        metrics.RECORDER_LAG.observe((time.time_ns() - min(r[0] for r in rows)) / 1e9)
                except StaleFence:
                    self.fenced += len(rows)
                    log.error(
                        "tick recorder: %d ticks refused: a newer leader's fence is recorded", len(rows)
                    )
                    rows = []
                del self._inflight[: len(chunk)]
                self.written += len(rows)
        except psycopg.Error as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("tick recorder: write failed, %d ticks buffered: %s", self.buffered, self.last_error)
            self._close()
            return False
        return True

    def _in_window(self, rows: list[TickRow]) -> list[TickRow]:
        today = (day_of(time.time_ns()) - EPOCH.date()).days
        low, high = (today - self.days_back) * DAY_NS, (today + self.days_ahead + 1) * DAY_NS
        if low <= min(r[0] for r in rows) and max(r[0] for r in rows) < high:
            return rows
        kept = [r for r in rows if low <= r[0] < high]
        self.rejected += len(rows) - len(kept)
        log.warning(
            "tick recorder: %d ticks dated outside the %d days back .. %d ahead window not written",
            len(rows) - len(kept),
            self.days_back,
            self.days_ahead,
        )
        return kept

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=3,
                application_name="tick-recorder",
                options=f"-c idle_in_transaction_session_timeout={self.IDLE_IN_TRANSACTION_S * 1000}",
            )
            copy_adapters(self._conn)
            self._days.clear()
            with self._conn.cursor() as cur:
                self._partitioned = is_partitioned(cur)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, rows: Sequence[TickRow]) -> None:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            if self._partitioned:
                self._ensure_days(cur, rows)
            # The queued writer sends to the server from its own thread while this one encodes; the
            # connection's copy_adapters take the rows as they are.
            with cur.copy(COPY_SQL, writer=QueuedLibpqWriter(cur)) as copy:
                copy.set_types(COPY_TYPES)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
            if self.fence is not None and not fence_check(cur, *self.fence):
                raise StaleFence(self.fence)  # rolls the batch back

    def _ensure_days(self, cur: psycopg.Cursor[Any], rows: Sequence[TickRow]) -> None:
        first, last = day_of(min(r[0] for r in rows)), day_of(max(r[0] for r in rows))
        today = day_of(time.time_ns())
        wanted = {first + timedelta(days=i) for i in range((last - first).days + 1)}
        wanted |= {today + timedelta(days=i) for i in range(self.days_ahead + 1)}
        missing = wanted - self._days
        if missing:
            created = partitions_ensure(cur, missing)
            if created:
                log.info("tick partitions created: %s", ", ".join(created))
            self._days |= missing


STAGING = "marketdata_tick_import"


def ticks_import(conn: psycopg.Connection[Any], *, symbol: str, rows: Sequence[str]) -> int:
    """Insert one symbol's ticks given as lines of text COPY (legacy.TickFile.rows), skipping those
    already stored (same time, venue, bid and ask): a second import of the same file adds nothing.
    One transaction; returns the rows added. Imported ticks carry seq 0 (no live sequence)."""
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (LIKE {TABLE} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        cur.execute(f"TRUNCATE {STAGING}")
        with cur.copy(f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for start in range(0, len(rows), 10_000):
                copy.write("".join(rows[start : start + 10_000]))
        cur.execute(f"SELECT min(ts), max(ts) FROM {STAGING}")  # noqa: S608 (module constants)
        first, last = cur.fetchone()  # type: ignore[misc]
        if is_partitioned(cur):
            days = (last.astimezone(UTC).date() - first.astimezone(UTC).date()).days
            partitions_ensure(
                cur, [first.astimezone(UTC).date() + timedelta(days=i) for i in range(days + 1)]
            )
        # The bounds are constants so that only the file's day partitions are searched.
        cur.execute(
            "INSERT INTO marketdata_tick (ts, symbol, venue, bid, ask, bid_size, ask_size, seq) "
            "SELECT ts, symbol, venue, bid, ask, bid_size, ask_size, seq FROM marketdata_tick_import s "
            "WHERE NOT EXISTS (SELECT 1 FROM marketdata_tick t WHERE t.symbol = %(symbol)s "
            "AND t.ts BETWEEN %(first)s AND %(last)s AND t.ts = s.ts AND t.venue = s.venue "
            "AND t.bid = s.bid AND t.ask = s.ask)",
            {"symbol": symbol, "first": first, "last": last},
        )
        return cur.rowcount


# A tick day file of the replaced broker parsed, checked and inserted by PostgreSQL in one statement.
# Repeats of the previous tick are left out; a file with any bad record inserts nothing (`bad` > 0)
# and is read again by marketdata.legacy, which tells which records and lines are bad.
_IMPORT_JSON_SQL = """
WITH raw AS MATERIALIZED (
    SELECT r.symbol, r.bid, r.ask, r.stamp, r.lp, r.stamp::timestamptz AS ts, lower(btrim(r.lp)) AS venue,
        (r.stamp, r.bid, r.ask, r.lp)
            IS NOT DISTINCT FROM lag((r.stamp, r.bid, r.ask, r.lp)) OVER (ORDER BY r.n) AS repeated
    FROM ROWS FROM (
        json_to_recordset(%(doc)s::json) AS (symbol text, bid numeric, ask numeric, "timestamp" text, lp text)
    ) WITH ORDINALITY AS r(symbol, bid, ask, stamp, lp, n)
), verdict AS (
    SELECT
        count(*) FILTER (WHERE NOT repeated AND (
            (symbol IS NOT NULL AND symbol <> %(symbol)s) OR bid IS NULL OR ask IS NULL OR bid <= 0
            OR ask < bid OR stamp IS NULL OR stamp !~ '(Z|[+-][0-9]{2}:?[0-9]{2})$'
            OR lp IS NULL OR venue = '' OR length(lp) > 32
        )) AS bad,
        count(*) FILTER (WHERE repeated) AS repeated,
        count(*) FILTER (WHERE NOT repeated) AS rows
    FROM raw
), added AS (
    INSERT INTO marketdata_tick (ts, symbol, venue, bid, ask, bid_size, ask_size, seq)
    SELECT ts, %(symbol)s, venue, bid, ask, NULL, NULL, 0 FROM raw
    WHERE NOT repeated AND (SELECT bad FROM verdict) = 0 AND NOT EXISTS (
        SELECT 1 FROM marketdata_tick t WHERE t.symbol = %(symbol)s AND t.ts >= %(low)s AND t.ts < %(high)s
        AND t.ts = raw.ts AND t.venue = raw.venue AND t.bid = raw.bid AND t.ask = raw.ask
    )
    RETURNING 1
)
SELECT bad, repeated, rows, (SELECT count(*) FROM added) FROM verdict
"""


def ticks_import_json(
    conn: psycopg.Connection[Any], *, symbol: str, doc: str, day: date
) -> tuple[int, int, int] | None:
    """Insert a tick day file of the replaced broker (its JSON text) named for `day` (the old
    server's local day: its ticks are within a day of it in UTC), skipping ticks already stored.
    Returns (ticks, repeated in a row, added), or None when the file has a bad record, nothing
    written (marketdata.legacy then reads it record by record)."""
    low = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    try:
        with conn.transaction(), conn.cursor() as cur:
            if is_partitioned(cur):
                partitions_ensure(cur, [day - timedelta(days=1), day, day + timedelta(days=1)])
            cur.execute(
                _IMPORT_JSON_SQL, {"doc": doc, "symbol": symbol, "low": low, "high": low + timedelta(days=3)}
            )
            bad, repeated, rows, added = cur.fetchone()  # type: ignore[misc]
            if bad:
                raise _BadFile
    except (_BadFile, psycopg.errors.DataError, psycopg.errors.CheckViolation):
        return None
    return rows, repeated, added


class _BadFile(Exception):
    """Rolls the file's transaction back."""
