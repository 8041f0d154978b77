import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Max, QuerySet
from rest_framework import status

from kernel import redis
from kernel.errors import ServiceError
from kernel.redis import key
from marketdata import ticks
from marketdata.adapters.base import VenueConfig
from marketdata.backfill import BACKFILL_KINDS, can_backfill
from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.candles import fill_gaps
from marketdata.models import SIMULATED, Candle, Instrument, Venue, VenueSymbol
from marketdata.publisher import book_key, ticker_key
from marketdata.quotes import QuotePayload, SelectedQuote

Tick = tuple[int, Decimal]  # (epoch ns, mid)

# A bar that ended this long ago and is not stored had no quote: the market loop stores a closed bar
# within about a second of its end.
SYNTHETIC_AFTER_S = 5
# The data version (kernel/versions.py) of instruments, venues, their symbols and stored candles.
MARKET_VERSION = "market"


def venue_config(v: Venue) -> VenueConfig:
    """A venue as the plain config adapters take (credentials decrypted, in memory only)."""
    return VenueConfig(
        code=v.code,
        kind=v.kind,
        priority=v.priority,
        stale_after_ms=v.stale_after_ms,
        config=v.config,
        credentials=json.loads(v.credentials) if v.credentials else {},
        symbols={s.venue_symbol: s.instrument.symbol for s in v.symbols.all() if s.enabled},
        symbol_priority={
            s.instrument.symbol: s.priority for s in v.symbols.all() if s.enabled and s.priority is not None
        },
        simulated=v.simulated,
    )


def venue_configs(*, kinds: set[str] | None = None) -> list[VenueConfig]:
    """Enabled venues as the plain configs adapters take."""
    venues = Venue.objects.filter(enabled=True).prefetch_related("symbols__instrument")
    if kinds is not None:
        venues = venues.filter(kind__in=kinds)
    return [venue_config(v) for v in venues]


def venues_simulated_enabled() -> list[str]:
    """Codes of the enabled venues whose prices are simulated (a live deployment runs none)."""
    return list(Venue.objects.filter(SIMULATED, enabled=True).order_by("code").values_list("code", flat=True))


def feed_health(*, now_ms: int | None = None) -> list[dict[str, Any]]:
    """The market loop's per-(venue, symbol) health rows, `age_ms` counted to now: the rows are
    exported once a second, so a market process that died leaves ages that keep growing."""
    raw = redis.get(key("feed-health"))
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rows: list[dict[str, Any]] = json.loads(raw) if raw else []
    for row in rows:
        since = max(0, now_ms - row["exported_ms"])
        row["age_ms"] += since
        row["silent_ms"] = row.get("silent_ms", row["age_ms"] - since) + since
    return rows


def venue_health(*, now_ms: int | None = None) -> list[dict[str, Any]]:
    """Per venue: the market loop's adapter row (state, reconnects, last error; `silent_ms` counted to
    now) with how many of its symbols feed healthily (selected or healthy) of how many it carries."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    raw = redis.get(key("venue-health"))
    venues: list[dict[str, Any]] = json.loads(raw) if raw else []
    feeds: dict[str, list[str]] = {}
    for row in feed_health(now_ms=now_ms):
        feeds.setdefault(row["venue"], []).append(row["state"])
    for venue in venues:
        since = max(0, now_ms - venue["exported_ms"])
        if venue["silent_ms"] is not None:
            venue["silent_ms"] += since
        states = feeds.get(venue["venue"], [])
        venue["symbols"] = len(states)
        venue["symbols_healthy"] = sum(state in ("selected", "healthy") for state in states)
    return venues


def instrument_symbols() -> list[str]:
    return list(Instrument.objects.values_list("symbol", flat=True))


def instrument_list() -> QuerySet[Instrument]:
    return Instrument.objects.order_by("symbol")


def instrument_get(*, symbol: str) -> Instrument:
    instrument = Instrument.objects.filter(symbol=symbol).first()
    if instrument is None:
        raise ServiceError(
            "unknown_symbol", f"Unknown symbol {symbol!r}.", status_code=status.HTTP_404_NOT_FOUND
        )
    return instrument


def quote_list(*, symbols: list[str] | None = None) -> list[QuotePayload]:
    """The latest selected quote per symbol from the Redis ticker cache. A known symbol with no
    cached quote is listed untradable with no price; an unknown symbol is a 404."""
    if symbols is None:
        symbols = instrument_symbols()
    else:
        known = set(Instrument.objects.filter(symbol__in=symbols).values_list("symbol", flat=True))
        unknown = [s for s in symbols if s not in known]
        if unknown:
            raise ServiceError(
                "unknown_symbol",
                f"Unknown symbol(s): {', '.join(unknown)}.",
                fields={"symbols": [f"Unknown symbol {s!r}." for s in unknown]},
                status_code=status.HTTP_404_NOT_FOUND,
            )
    raw = redis.mget([ticker_key(s) for s in symbols])
    return [
        json.loads(r) if r else SelectedQuote(symbol=s, seq=0, quote=None, tradable=False).to_wire()
        for s, r in zip(symbols, raw)
    ]


def order_book_get(*, venue: str, symbol: str) -> dict[str, Any] | None:
    """The latest top of book a venue sent for a symbol, if seen in the last ORDER_BOOK_CACHE_TTL s."""
    raw = redis.get(book_key(venue, symbol))
    return json.loads(raw) if raw else None


def _bar(candle: Candle, symbol: str) -> Bar:
    return Bar(
        symbol=symbol,
        timeframe=candle.timeframe,
        start=int(candle.start.timestamp()),
        open=candle.open.normalize(),  # drop the column's padding zeros
        high=candle.high.normalize(),
        low=candle.low.normalize(),
        close=candle.close.normalize(),
        volume=candle.volume.normalize(),
        tick_count=candle.tick_count,
        partial=candle.partial,
        source=candle.source,
        venue=candle.venue,
    )


def candle_page(
    *, instrument: Instrument, timeframe: str, start: int, end: int, limit: int, now: int | None = None
) -> tuple[list[Bar], int | None]:
    """Bars of [start, end) (epoch seconds), gaps filled with synthetic bars, at most `limit`.
    Returns the bars and the start of the next page (None when there is no more)."""
    step = TIMEFRAME_SECONDS[timeframe]
    start = -(-start // step) * step  # the first bar that starts at or after `start`
    now = int(datetime.now(UTC).timestamp()) if now is None else now
    candles = Candle.objects.filter(instrument=instrument, timeframe=timeframe)
    stored = [
        _bar(c, instrument.symbol)
        for c in candles.filter(
            start__gte=datetime.fromtimestamp(start, UTC), start__lt=datetime.fromtimestamp(end, UTC)
        ).order_by("start")[:limit]
    ]
    previous = candles.filter(start__lt=datetime.fromtimestamp(start, UTC)).order_by("-start").first()
    complete_until = now - SYNTHETIC_AFTER_S
    bars, after = fill_gaps(
        stored,
        symbol=instrument.symbol,
        timeframe=timeframe,
        start=start,
        end=end,
        previous=_bar(previous, instrument.symbol) if previous else None,
        complete_until=complete_until,
        limit=limit,
    )
    if after >= end:
        return bars, None
    more = ((bool(bars) or previous is not None) and after + step <= complete_until) or candles.filter(
        start__gte=datetime.fromtimestamp(after, UTC), start__lt=datetime.fromtimestamp(end, UTC)
    ).exists()
    return bars, after if more else None


# How far back the market loop looks for the bars the previous run left open: a standby takes over
# within seconds; after a longer stop the beat's backfill fills what is missing. A symbol with no
# 1m bar stored in that time gets its bars made from the last hour of its ticks.
RESTORE_LOOKBACK_S = 86_400
RESTORE_NO_BAR_LOOKBACK_S = 3600


def candle_restore_inputs(*, symbols: list[str], now: int) -> dict[str, tuple[list[Bar], list[Tick]]]:
    """Per symbol, what the candle builder needs to rebuild the bars that were open when the
    previous run stopped, at `now` (epoch ns): its stored bars of every timeframe since the start
    of the day of its last stored 1m bar, and the mids recorded after that bar (within
    RESTORE_LOOKBACK_S)."""
    now_s = now // 1_000_000_000
    minute_start = now_s - now_s % 60
    day = max(TIMEFRAME_SECONDS.values())
    floor = datetime.fromtimestamp(now_s - RESTORE_LOOKBACK_S, UTC)
    latest = dict(
        Candle.objects.filter(
            instrument__symbol__in=symbols,
            timeframe="1m",
            start__gte=floor,
            start__lt=datetime.fromtimestamp(minute_start, UTC),
        )
        .values("instrument__symbol")
        .annotate(last=Max("start"))
        .values_list("instrument__symbol", "last")
    )
    no_bar = minute_start - RESTORE_NO_BAR_LOOKBACK_S
    since = {s: int(latest[s].timestamp()) + 60 if s in latest else no_bar for s in symbols}
    result: dict[str, tuple[list[Bar], list[Tick]]] = {s: ([], []) for s in symbols}
    if not symbols:
        return result
    earliest = min(since.values())
    candles = Candle.objects.filter(
        instrument__symbol__in=symbols,
        start__gte=datetime.fromtimestamp(earliest - earliest % day, UTC),
        start__lt=datetime.fromtimestamp(minute_start, UTC),
    ).select_related("instrument")
    for candle in candles:
        symbol = candle.instrument.symbol
        if candle.start.timestamp() >= since[symbol] - since[symbol] % day:
            result[symbol][0].append(_bar(candle, symbol))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.symbol, t.ts, t.bid, t.ask "  # noqa: S608 (a constant)
            "FROM unnest(%s::text[], %s::timestamptz[]) AS s(symbol, since) "
            f"JOIN {ticks.TABLE} t ON t.symbol = s.symbol AND t.ts >= s.since AND t.ts >= %s "
            "ORDER BY t.ts, t.seq",
            [list(since), [datetime.fromtimestamp(v, UTC) for v in since.values()], floor],
        )
        for symbol, ts, bid, ask in cursor.fetchall():
            at = (ts - ticks.EPOCH) // timedelta(microseconds=1) * 1000
            result[symbol][1].append((at, (bid + ask) / 2))
    return result


def tick_page(
    *,
    symbol: str,
    start: datetime,
    end: datetime,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> tuple[list[dict[str, Any]], tuple[datetime, int] | None]:
    """Recorded ticks of [start, end) in time order, at most `limit`, after the (ts, seq) `after`.
    Returns them and the (ts, seq) to continue from (None when there is no more)."""
    sql = (
        f"SELECT ts, venue, bid, ask, bid_size, ask_size, seq FROM {ticks.TABLE} "  # noqa: S608 (a constant)
        "WHERE symbol = %s AND ts >= %s AND ts < %s"
    )
    params: list[Any] = [symbol, start, end]
    if after is not None:
        sql += " AND (ts, seq) > (%s, %s)"
        params += list(after)
    sql += " ORDER BY ts, seq LIMIT %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit + 1])
        rows = cursor.fetchall()
    page = [
        {"ts": ts, "venue": venue, "bid": bid, "ask": ask, "bid_size": bs, "ask_size": asz, "seq": seq}
        for ts, venue, bid, ask, bs, asz, seq in rows[:limit]
    ]
    following = (page[-1]["ts"], page[-1]["seq"]) if len(rows) > limit else None
    return page, following


def tick_partition_stats() -> list[tuple[str, str, int]]:
    """(partition, day, estimated rows) of the tick table, newest first, for the admin."""
    with connection.cursor() as cursor:
        return [(name, day.isoformat(), rows) for name, day, rows in reversed(ticks.partitions_list(cursor))]


def backfill_targets(*, instrument: Instrument | None = None) -> list[VenueSymbol]:
    """Enabled venue symbols on enabled venues that can serve candle history (Coinbase and Binance
    always, their endpoints are public; OANDA with a token), best priority first."""
    symbols = VenueSymbol.objects.filter(
        enabled=True, venue__enabled=True, venue__kind__in=BACKFILL_KINDS
    ).select_related("venue", "instrument")
    if instrument is not None:
        symbols = symbols.filter(instrument=instrument)
    readable: dict[int, bool] = {}
    targets = []
    for vs in symbols.order_by("venue__priority", "instrument__symbol"):
        if vs.venue_id not in readable:
            readable[vs.venue_id] = can_backfill(venue_config(vs.venue))
        if readable[vs.venue_id]:
            targets.append(vs)
    return targets


def warm_up_targets(*, venue_codes: set[str] | None = None) -> list[VenueSymbol]:
    """Per instrument, the venue symbol to take its history from: the best-priority venue that can
    serve it. With `venue_codes`, only instruments quoted by those venues (after their reconnect)."""
    best: dict[int, VenueSymbol] = {}
    for vs in backfill_targets():
        best.setdefault(vs.instrument_id, vs)
    if venue_codes is not None:
        quoted = set(
            VenueSymbol.objects.filter(
                enabled=True, venue__enabled=True, venue__code__in=venue_codes
            ).values_list("instrument_id", flat=True)
        )
        return [vs for instrument_id, vs in best.items() if instrument_id in quoted]
    return list(best.values())


def candles_replaced_count() -> int:
    """Bars built here (trades or mid) that a backfill replaced by the venue's own, all time."""
    return Candle.objects.filter(replaced=True).count()


TickRecord = tuple[datetime, str, str, Decimal, Decimal, Decimal | None, Decimal | None, int]


def ticks_of_day(*, symbol: str, day: date, batch: int = 20_000) -> Iterator[list[TickRecord]]:
    """A symbol's stored ticks of one UTC day in time order, in batches (a day can be millions)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ts, symbol, venue, bid, ask, bid_size, ask_size, seq FROM marketdata_tick "
            "WHERE symbol = %s AND ts >= %s AND ts < %s ORDER BY ts, seq",
            [symbol, start, start + timedelta(days=1)],
        )
        while rows := cursor.fetchmany(batch):
            yield rows
