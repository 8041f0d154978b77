"""Tick storage: every selected quote in `marketdata_tick`, and the recorder that writes it.

The table is partitioned by range on `ts`, one partition per UTC day (created ahead by the recorder
and the retention job), or a TimescaleDB hypertable with one-day chunks when the extension is
installed. No Django here: the functions take a DB-API cursor (Django's or psycopg's) and the
recorder its own psycopg connection, so it runs in a thread off the market loop.

Indexes of the day partitions: a BRIN on `ts` on every one, and a btree on (symbol, ts) only on past
days. A btree entry per row halved what COPY writes per second; a BRIN is one summary per 128 pages
of an append-only table, though on PostgreSQL 15 its insert still reads the index's metapage for
every row: about a sixth of the backend's CPU in a COPY (perf). Today's partition is read by time
(the candle restore, recent pages of a symbol) and past days by symbol and time as before: the btree
is built once when a day is over (`partitions_index`, hourly with the retention, and as a past day's
partition is created). The last seq of each symbol, which the market loop continues from, is kept in
`SEQ_TABLE` with each batch.
"""

import logging
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import PyFormat

from kernel import metrics
from kernel.lease import StaleFence, fence_check
from marketdata.quotes import SelectedQuote

log = logging.getLogger(__name__)

TABLE = "marketdata_tick"
SEQ_TABLE = "marketdata_tick_seq"
PARTITION_PREFIX = f"{TABLE}_p"
INDEX_SUFFIX = "_symbol_ts"
DAY_NS = 86_400 * 1_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLUMNS = ("ts", "symbol", "venue", "bid", "ask", "bid_size", "ask_size", "seq")
COPY_SQL = f"COPY {{table}} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"  # into TABLE or a partition

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
    """Create the tick table (a hypertable when TimescaleDB is installed, else day partitions) and
    the table of each symbol's last seq."""
    if timescale_installed(cursor):
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS_SQL})")
        cursor.execute(
            f"SELECT create_hypertable('{TABLE}', 'ts', chunk_time_interval => interval '1 day', "
            "if_not_exists => true)"
        )
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}{INDEX_SUFFIX} ON {TABLE} (symbol, ts)")
    else:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS_SQL}) PARTITION BY RANGE (ts)")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_ts_brin ON {TABLE} USING brin (ts)")
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {SEQ_TABLE} (symbol varchar(20) PRIMARY KEY, seq bigint NOT NULL)"
    )


def tick_table_drop(cursor: Any) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
    cursor.execute(f"DROP TABLE IF EXISTS {SEQ_TABLE}")


def is_partitioned(cursor: Any) -> bool:
    """True for declarative day partitions, False for a hypertable (chunks are TimescaleDB's job)."""
    cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s AND relkind IN ('p', 'r')", [TABLE])
    row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partitions_ensure(cursor: Any, days: Iterable[date]) -> list[str]:
    """Create the day partitions that do not exist yet (a past day's with its btree); returns their
    names."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        [TABLE],
    )
    existing = {row[0] for row in cursor.fetchall()}
    today = datetime.now(UTC).date()
    created = []
    for day in sorted(set(days)):
        name = partition_name(day)
        if name in existing:
            continue
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
        )
        if day < today:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name}{INDEX_SUFFIX} ON {name} (symbol, ts)")
        created.append(name)
    return created


def partitions_index(cursor: Any, *, before: date) -> list[str]:
    """Give the day partitions before `before` that have none their (symbol, ts) btree; returns the
    names of the partitions indexed."""
    cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename LIKE %s", [f"{PARTITION_PREFIX}%"])
    indexed = {row[0] for row in cursor.fetchall()}
    done = []
    for name, day, _ in partitions_list(cursor):
        if day < before and f"{name}{INDEX_SUFFIX}" not in indexed:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name}{INDEX_SUFFIX} ON {name} (symbol, ts)")
            done.append(name)
    return done


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


def last_seqs(cursor: Any, symbols: Sequence[str]) -> dict[str, int]:
    """The highest stored seq of each symbol that has any (the recorder keeps it with each batch)."""
    cursor.execute(
        f"SELECT symbol, seq FROM {SEQ_TABLE} WHERE symbol = ANY(%s)",  # noqa: S608 (a constant)
        [list(symbols)],
    )
    return {symbol: int(seq) for symbol, seq in cursor.fetchall()}


_SEQ_UPSERT_SQL = (
    f"INSERT INTO {SEQ_TABLE} (symbol, seq) SELECT * FROM unnest(%s::text[], %s::bigint[]) "  # noqa: S608 (constants)
    f"ON CONFLICT (symbol) DO UPDATE SET seq = GREATEST({SEQ_TABLE}.seq, EXCLUDED.seq)"
)


def ns_to_datetime(ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ns // 1000)


def day_of(ns: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ns // DAY_NS)


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
# psycopg's C dumper (psycopg_binary), else its Python one.
_dump_numeric = psycopg.adapters.get_dumper(Decimal, PyFormat.BINARY)(Decimal).dump
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_pack_row_start = struct.Struct(">hiq").pack  # field count, then the timestamptz's length and value
_pack_int8 = struct.Struct(">iq").pack  # length and value
_pack_row_between = struct.Struct(">iqhiq").pack  # a row's int8 (length, value), the next row's start
_pack_length = struct.Struct(">i").pack
_ENCODE_ROWS = 5_000  # rows per piece written


def _text_field(value: str) -> bytes:
    data = value.encode()
    return _pack_length(len(data)) + data


def _numeric_field(value: Decimal | None) -> bytes:
    if value is None:
        return _NULL
    data = bytes(cast(Buffer, _dump_numeric(value)))
    return _pack_length(len(data)) + data


def copy_rows(rows: Sequence[SelectedQuote]) -> Iterator[bytes]:
    """Selected quotes (each with its quote) as binary COPY data for COPY_SQL, signature and trailer
    included, in pieces: the quote's venue timestamp, the selection's symbol, the quote's venue,
    prices and sizes, the selection's seq. They are read here, as the recorder buffered them: a tuple
    made per tick cost the hand-over and the garbage collector more than these reads. The venue
    timestamp (epoch ns) becomes a timestamptz (microseconds, truncated as the datetime it stands for
    would be). Symbols, venues, prices and sizes repeat: each field is encoded once per call, which
    is most of what encoding a tick costs. Prices and sizes are looked up by their text: quotes bring
    new Decimal objects, whose hash (computed on first use) costs several times their str(), and
    equal text is the same Decimal, so the same field. Equal Decimals may differ in exponent (1.0,
    1.00); the columns' fixed scale stores them alike. A row's seq is packed with the next row's
    start (they are adjacent in the data): one pack a row."""
    texts: dict[str, bytes] = {}
    numbers: dict[str, bytes] = {"None": _NULL}
    yield _COPY_SIGNATURE
    for start in range(0, len(rows), _ENCODE_ROWS):
        chunk = rows[start : start + _ENCODE_ROWS]
        first = chunk[0].quote
        assert first is not None  # the recorder buffers only selections with a quote
        piece = [_pack_row_start(8, 8, first.venue_ts // 1000 - _PG_EPOCH_US)]
        seq = None
        for selected in chunk:
            q = selected.quote
            assert q is not None
            if seq is not None:
                piece.append(_pack_row_between(8, seq, 8, 8, q.venue_ts // 1000 - _PG_EPOCH_US))
            seq = selected.seq
            while True:  # a miss learns the row's new texts and numbers, then packs it again
                try:
                    piece += (
                        texts[selected.symbol],
                        texts[q.venue],
                        numbers[str(q.bid)],
                        numbers[str(q.ask)],
                        numbers[str(q.bid_size)],
                        numbers[str(q.ask_size)],
                    )
                    break
                except KeyError:
                    for text in (selected.symbol, q.venue):
                        if text not in texts:
                            texts[text] = _text_field(text)
                    for number in (q.bid, q.ask, q.bid_size, q.ask_size):
                        if str(number) not in numbers:
                            numbers[str(number)] = _numeric_field(number)
        piece.append(_pack_int8(8, seq))
        yield b"".join(piece)
    yield _COPY_TRAILER


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
        # Appended to by the hand-over, taken from the front by the writer once committed.
        self._buffer: list[SelectedQuote] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._partitioned: bool | None = None
        self._days: set[date] = set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def __call__(self, selected: SelectedQuote) -> None:
        """Buffer a selected quote as it is (frozen: nothing to copy). Called from one thread, the
        LP manager's; no lock: the writer only takes from the buffer (list.append, a slice and del of
        a slice each run whole under the GIL), so the bound checked here holds when appending."""
        if selected.quote is None or not selected.tradable:
            return
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.dropped += 1
            return
        buffer.append(selected)
        if len(buffer) == self.batch_size:
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
            # A backlog the writer left (the buffer did not pass batch_size again) is written at once.
            if not stopping and (delay or len(self._buffer) < self.batch_size):
                self._wake.wait(delay or self.flush_interval_s)
                self._wake.clear()
            delay = 0.0 if self.flush() else min(max(delay * 2, 0.25), self.retry_max_s)
            if stopping:
                break
        self._close()

    def flush(self) -> bool:
        """Write everything buffered. False if PostgreSQL failed (the rows stay buffered)."""
        buffer = self._buffer
        left = len(buffer)  # what comes in meanwhile waits for the next flush
        try:
            while left:
                chunk = buffer[: min(left, self.batch_size * 5)]
                rows, oldest, newest = self._in_window(chunk)
                try:
                    if rows:
                        self._write(rows, oldest, newest)
                        metrics.RECORDER_LAG.observe((time.time_ns() - oldest) / 1e9)
                except StaleFence:
                    self.fenced += len(rows)
                    log.error(
                        "tick recorder: %d ticks refused: a newer leader's fence is recorded", len(rows)
                    )
                    rows = []
                del buffer[: len(chunk)]
                left -= len(chunk)
                self.written += len(rows)
        except psycopg.Error as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("tick recorder: write failed, %d ticks buffered: %s", self.buffered, self.last_error)
            self._close()
            return False
        return True

    def _in_window(self, rows: list[SelectedQuote]) -> tuple[list[SelectedQuote], int, int]:
        """The quotes dated within the window, and the oldest and newest of their times."""
        today = (day_of(time.time_ns()) - EPOCH.date()).days
        low, high = (today - self.days_back) * DAY_NS, (today + self.days_ahead + 1) * DAY_NS
        stamps = [selected.quote.venue_ts for selected in rows]  # type: ignore[union-attr]
        oldest, newest = min(stamps), max(stamps)
        if low <= oldest and newest < high:
            return rows, oldest, newest
        kept = [r for r, ts in zip(rows, stamps) if low <= ts < high]
        stamps = [ts for ts in stamps if low <= ts < high]
        self.rejected += len(rows) - len(kept)
        log.warning(
            "tick recorder: %d ticks dated outside the %d days back .. %d ahead window not written",
            len(rows) - len(kept),
            self.days_back,
            self.days_ahead,
        )
        return kept, min(stamps, default=0), max(stamps, default=0)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=3,
                application_name="tick-recorder",
                options=f"-c idle_in_transaction_session_timeout={self.IDLE_IN_TRANSACTION_S * 1000}",
            )
            self._days.clear()
            with self._conn.cursor() as cur:
                self._partitioned = is_partitioned(cur)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, rows: Sequence[SelectedQuote], oldest: int, newest: int) -> None:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            table = TABLE
            if self._partitioned:
                self._ensure_days(cur, oldest, newest)
                if day_of(oldest) == day_of(newest):
                    # Into the day's partition: PostgreSQL checks each row against its bounds instead
                    # of routing it, about a tenth less of its CPU per row.
                    table = partition_name(day_of(oldest))
            # Written from this thread: with the rows encoded in bulk, a sending thread (psycopg's
            # QueuedLibpqWriter) cost more Python time per row in handing over than it saved.
            with cur.copy(COPY_SQL.format(table=table)) as copy:
                for data in copy_rows(rows):
                    copy.write(data)
            # A symbol's rows come in seq order: its last row has its highest seq.
            last = {selected.symbol: selected.seq for selected in rows}
            cur.execute(_SEQ_UPSERT_SQL, [list(last), list(last.values())])
            if self.fence is not None and not fence_check(cur, *self.fence):
                raise StaleFence(self.fence)  # rolls the batch back

    def _ensure_days(self, cur: psycopg.Cursor[Any], oldest: int, newest: int) -> None:
        first, last = day_of(oldest), day_of(newest)
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
