import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify
from rest_framework import status

from kernel import redis, versions
from kernel.errors import ServiceError
from kernel.lease import StaleFence, fence_check
from marketdata import catalogue, legacy, ticks
from marketdata.adapters.base import MalformedMessage
from marketdata.adapters.binance import MAX_STREAMS as BINANCE_MAX_STREAMS
from marketdata.adapters.binance import MAX_SYMBOLS as BINANCE_MAX_SYMBOLS
from marketdata.adapters.rest import VenueHttpError
from marketdata.backfill import BACKFILL_KINDS, BackfillUnavailable, FetchProgress, ProgressHook, venue_bars
from marketdata.bars import TIMEFRAME_SECONDS, Bar, bar_to_wire
from marketdata.models import (
    BackfillJob,
    Candle,
    CandleSource,
    FeedHealthSnapshot,
    Instrument,
    Venue,
    VenueKind,
    VenueSymbol,
)
from marketdata.publisher import candle_cache_key, ticker_key
from marketdata.selectors import MARKET_VERSION, feed_health, venue_config
from users.models import User
from users.services import audit_record

log = logging.getLogger(__name__)


def venue_set_enabled(*, venue: Venue, enabled: bool, actor: User) -> bool:
    """Enable or disable a venue (the market loop applies it on its next reload), audited.
    Returns False when the venue already was in that state (nothing written)."""
    with transaction.atomic():
        locked = Venue.objects.select_for_update().get(pk=venue.pk)
        if locked.enabled == enabled:
            return False
        if enabled and locked.simulated and not settings.LIVERMORE_DEMO:
            raise ServiceError(
                "simulated_venue",
                f"Venue {locked.code} is simulated: this deployment is live (LIVERMORE_DEMO).",
                status_code=status.HTTP_409_CONFLICT,
            )
        locked.enabled = enabled
        locked.save(update_fields=["enabled", "updated_at"])
        audit_record(actor=actor, action="venue.enable" if enabled else "venue.disable", target=locked)
    venue.enabled = enabled
    log.info("venue=%s %s by %s", venue.code, "enabled" if enabled else "disabled", actor)
    return True


def feed_health_snapshot_take() -> list[FeedHealthSnapshot]:
    """Record, per symbol, the selected venue, its price and how fresh it is."""
    rows = [r for r in feed_health() if r["state"] == "selected"]
    by_symbol = {r["symbol"]: r for r in rows}
    symbols = sorted(by_symbol)
    tickers = dict(zip(symbols, redis.mget([ticker_key(s) for s in symbols]), strict=True))
    now = timezone.now()
    snapshots = []
    for symbol in symbols:
        ticker = json.loads(tickers[symbol]) if tickers.get(symbol) else {}
        snapshots.append(
            FeedHealthSnapshot(
                taken_at=now,
                symbol=symbol,
                venue=by_symbol[symbol]["venue"],
                bid=Decimal(ticker["bid"]) if ticker.get("bid") else None,
                ask=Decimal(ticker["ask"]) if ticker.get("ask") else None,
                seq=ticker.get("seq"),
                age_ms=by_symbol[symbol]["age_ms"],
                tradable=bool(ticker.get("tradable")),
            )
        )
    return FeedHealthSnapshot.objects.bulk_create(snapshots)


def candles_store(*, bars: Iterable[Bar], fence: tuple[str, int] | None = None) -> int:
    """Insert closed bars with their source and venue; a bar already stored (same instrument,
    timeframe, start) is kept as it is. Bars of unknown symbols are skipped. Returns how many bars
    were offered for known symbols. With a lease `fence` (name, number), the bars commit only if no
    newer leader recorded its fence: StaleFence otherwise, nothing stored."""
    bars = list(bars)
    ids = dict(Instrument.objects.filter(symbol__in={b.symbol for b in bars}).values_list("symbol", "id"))
    rows = [
        Candle(
            instrument_id=ids[b.symbol],
            timeframe=b.timeframe,
            start=datetime.fromtimestamp(b.start, UTC),
            open=b.open,
            high=b.high,
            low=b.low,
            close=b.close,
            volume=b.volume,
            tick_count=b.tick_count,
            source=b.source,
            venue=b.venue,
            partial=b.partial,
        )
        for b in bars
        if b.symbol in ids and not b.synthetic
    ]
    with transaction.atomic():
        Candle.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        if fence is not None:
            with connection.cursor() as cursor:
                # A process frozen from here to the commit holds the fence row: not for long.
                cursor.execute("SET LOCAL idle_in_transaction_session_timeout = '3s'")
                if not fence_check(cursor, *fence):
                    raise StaleFence(fence)
    if rows:
        versions.bump_on_commit(MARKET_VERSION)
    return len(rows)


def tick_partitions_maintain(*, retention_days: int, days_ahead: int = 2) -> dict[str, list[str]]:
    """Drop tick days older than `retention_days`, create the coming days' partitions and index the
    days that are over by symbol (ticks.partitions_index)."""
    today = timezone.now().date()
    with connection.cursor() as cursor:
        dropped = ticks.ticks_drop_before(cursor, today - timedelta(days=retention_days))
        created, indexed = [], []
        if ticks.is_partitioned(cursor):
            created = ticks.partitions_ensure(
                cursor, [today + timedelta(days=i) for i in range(days_ahead + 1)]
            )
            indexed = ticks.partitions_index(cursor, before=today)
    return {"dropped": dropped, "created": created, "indexed": indexed}


def _ohlc(bar: Bar) -> dict[str, Decimal | int]:
    return {
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "tick_count": bar.tick_count,
    }


@dataclass(frozen=True)
class BackfillResult:
    fetched: int
    added: int
    replaced: int


def _backfill_checks(*, timeframe: str, start: datetime, end: datetime, venue: Venue) -> None:
    if timeframe not in TIMEFRAME_SECONDS:
        raise ServiceError(
            "invalid_timeframe",
            f"Timeframe must be one of {', '.join(TIMEFRAME_SECONDS)}.",
            fields={"timeframe": [f"Unknown timeframe {timeframe!r}."]},
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    if start.tzinfo is None or end.tzinfo is None or start >= end:
        raise ServiceError(
            "invalid_range",
            "Start and end must be timezone-aware and start must be before end.",
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    if venue.kind not in BACKFILL_KINDS:
        raise ServiceError(
            "backfill_unsupported", f"Venue {venue.code} ({venue.kind}) has no candle history."
        )


def candles_backfill(
    *,
    instrument: Instrument,
    timeframe: str,
    start: datetime,
    end: datetime,
    venue: Venue,
    progress: ProgressHook | None = None,
) -> BackfillResult:
    """Fetch the venue's closed bars with start in [start, end) and store them.

    Idempotent. A bar we lack is added. A bar built here (from trades or the mid) whose period has
    ended is replaced by the venue's own, once, and counted (`Candle.replaced`): a series holds the
    venue's bars wherever the venue has them, never a silent mix. A bar already backfilled (from
    any venue) is kept. `progress` is called after every page fetched."""
    _backfill_checks(timeframe=timeframe, start=start, end=end, venue=venue)
    venue_symbol = VenueSymbol.objects.filter(venue=venue, instrument=instrument).first()
    if venue_symbol is None:
        raise ServiceError("no_venue_symbol", f"{instrument.symbol} is not mapped on venue {venue.code}.")
    try:
        bars = venue_bars(
            venue_config(venue),
            venue_symbol=venue_symbol.venue_symbol,
            symbol=instrument.symbol,
            timeframe=timeframe,
            start=int(start.timestamp()),
            end=int(end.timestamp()),
            progress=progress,
        )
    except BackfillUnavailable as exc:
        raise ServiceError("backfill_unavailable", str(exc)) from exc
    except (VenueHttpError, MalformedMessage) as exc:
        raise ServiceError("venue_error", str(exc), status_code=status.HTTP_502_BAD_GATEWAY) from exc
    starts = {datetime.fromtimestamp(bar.start, UTC): bar for bar in bars}
    stored = {
        c.start: c
        for c in Candle.objects.filter(instrument=instrument, timeframe=timeframe, start__in=starts)
    }
    missing = [
        Candle(
            instrument=instrument,
            timeframe=timeframe,
            start=when,
            source=CandleSource.BACKFILL,
            venue=venue.code,
            **_ohlc(bar),
        )
        for when, bar in starts.items()
        if when not in stored
    ]
    # ignore_conflicts: a bar stored meanwhile (the market loop, a concurrent backfill) is kept
    # here and replaced by the next backfill if it was built locally.
    Candle.objects.bulk_create(missing, ignore_conflicts=True, batch_size=1000)
    added = len(missing)
    ended = int(timezone.now().timestamp()) - TIMEFRAME_SECONDS[timeframe]
    replacements = []
    for when, candle in stored.items():
        bar = starts[when]
        if candle.source != CandleSource.BACKFILL and bar.start <= ended:
            for name, value in _ohlc(bar).items():
                setattr(candle, name, value)
            candle.source, candle.venue, candle.partial, candle.replaced = (
                CandleSource.BACKFILL,
                venue.code,
                False,
                True,
            )
            replacements.append(candle)
    Candle.objects.bulk_update(
        replacements,
        ["open", "high", "low", "close", "volume", "tick_count", "source", "venue", "partial", "replaced"],
        batch_size=500,
    )
    _candle_cache_replace([starts[c.start] for c in replacements])
    if missing or replacements:
        versions.bump_on_commit(MARKET_VERSION)
    log.info(
        "venue=%s backfill %s %s %s..%s: %d fetched, %d added, %d replaced",
        venue.code,
        instrument.symbol,
        timeframe,
        start.isoformat(),
        end.isoformat(),
        len(bars),
        added,
        len(replacements),
    )
    return BackfillResult(fetched=len(bars), added=added, replaced=len(replacements))


def _candle_cache_replace(bars: list[Bar]) -> None:
    """Put replaced bars in the Redis candle cache (stream snapshots) where it holds the bar they
    replace; a bar the cache no longer holds is not added back."""
    if not bars:
        return
    client = redis.sync_client()
    with client.pipeline(transaction=False) as pipe:
        for bar in bars:
            pipe.zremrangebyscore(candle_cache_key(bar.symbol, bar.timeframe), bar.start, bar.start)
        removed = pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        for bar, count in zip(bars, removed, strict=True):
            if count:
                pipe.zadd(
                    candle_cache_key(bar.symbol, bar.timeframe), {json.dumps(bar_to_wire(bar)): bar.start}
                )
        pipe.execute()


def _closed_bars(instrument: Instrument, timeframe: str, start: int, end: int) -> int:
    return Candle.objects.filter(
        instrument=instrument,
        timeframe=timeframe,
        start__gte=datetime.fromtimestamp(start, UTC),
        start__lt=datetime.fromtimestamp(end, UTC),
    ).count()


def candles_warm_up(
    *,
    instrument: Instrument,
    venue: Venue,
    bars: int,
    timeframes: Iterable[str] = TIMEFRAME_SECONDS,
    now: int | None = None,
    gap_from: int | None = None,
    progress: ProgressHook | None = None,
) -> dict[str, int]:
    """Make sure `instrument` has at least `bars` closed bars up to now on every timeframe,
    backfilling from `venue` what is missing. A timeframe that already has them costs one count
    query and no request. Where the venue has no bars for part of the window (FX weekends), the
    window is widened back, at most three times.

    `gap_from` (epoch s): a feed was away from then to now (a reconnect), so the bars from the one
    before the bar in progress then are fetched whatever the count says: bars built here during
    the gap lack its trades, and the venue's replace them.

    Returns the closed bars now stored in the final window, per timeframe."""
    now = int(timezone.now().timestamp()) if now is None else now
    have: dict[str, int] = {}
    for timeframe in timeframes:
        step = TIMEFRAME_SECONDS[timeframe]
        end = now - now % step  # the bar in progress is not closed yet
        if gap_from is not None and (gap_start := gap_from - gap_from % step - step) < end:
            candles_backfill(
                instrument=instrument,
                timeframe=timeframe,
                start=datetime.fromtimestamp(gap_start, UTC),
                end=datetime.fromtimestamp(end, UTC),
                venue=venue,
                progress=progress,
            )
        lookback, fetched_from = bars, end
        count = 0
        for _ in range(4):
            start = end - lookback * step
            count = _closed_bars(instrument, timeframe, start, end)
            if count >= bars or bars == 0:
                break
            result = candles_backfill(
                instrument=instrument,
                timeframe=timeframe,
                start=datetime.fromtimestamp(start, UTC),
                end=datetime.fromtimestamp(fetched_from, UTC),
                venue=venue,
                progress=progress,
            )
            count = _closed_bars(instrument, timeframe, start, end)
            if count >= bars or result.fetched == 0:
                break
            fetched_from, lookback = start, lookback * 2
        have[timeframe] = count
    return have


def backfill_job_create(
    *,
    instrument: Instrument,
    venue: Venue,
    timeframe: str,
    start: datetime,
    end: datetime,
    requested_by: User | None = None,
) -> BackfillJob:
    """Record a backfill to run (the caller queues it once the transaction commits)."""
    _backfill_checks(timeframe=timeframe, start=start, end=end, venue=venue)
    if not VenueSymbol.objects.filter(venue=venue, instrument=instrument).exists():
        raise ServiceError("no_venue_symbol", f"{instrument.symbol} is not mapped on venue {venue.code}.")
    return BackfillJob.objects.create(
        instrument=instrument,
        venue=venue,
        timeframe=timeframe,
        start=start,
        end=end,
        requested_by=requested_by,
    )


def backfill_job_run(*, job_id: int, progress: ProgressHook | None = None) -> BackfillJob:
    """Run a queued job, saving its progress after every page (and telling `progress`). A job
    already taken (a redelivered task) is left alone: the queued -> running transition happens
    once, in the database."""
    taken = BackfillJob.objects.filter(pk=job_id, state=BackfillJob.State.QUEUED).update(
        state=BackfillJob.State.RUNNING, started_at=timezone.now()
    )
    job = BackfillJob.objects.select_related("instrument", "venue").get(pk=job_id)
    if not taken:
        return job

    def saved(state: FetchProgress) -> None:
        BackfillJob.objects.filter(pk=job_id).update(
            pages=state.pages, bars_fetched=state.bars, rate_limit_waits=state.rate_limit_waits
        )
        if progress is not None:
            progress(state)

    try:
        result = candles_backfill(
            instrument=job.instrument,
            timeframe=job.timeframe,
            start=job.start,
            end=job.end,
            venue=job.venue,
            progress=saved,
        )
    except ServiceError as exc:
        BackfillJob.objects.filter(pk=job_id).update(
            state=BackfillJob.State.FAILED, error=exc.message[:300], finished_at=timezone.now()
        )
    else:
        BackfillJob.objects.filter(pk=job_id).update(
            state=BackfillJob.State.DONE,
            bars_fetched=result.fetched,
            bars_added=result.added,
            bars_replaced=result.replaced,
            finished_at=timezone.now(),
        )
    job.refresh_from_db()
    return job


# -- instrument catalogue and watchlists ---------------------------------------------------


def _instrument_row(i: Instrument) -> catalogue.InstrumentRow:
    return catalogue.InstrumentRow(
        symbol=i.symbol,
        description=i.description,
        base_currency=i.base_currency,
        quote_currency=i.quote_currency,
        contract_size=i.contract_size,
        digits=i.digits,
        tick_size=i.tick_size,
        pip_size=i.pip_size,
        volume_min=i.volume_min,
        volume_max=i.volume_max,
        volume_step=i.volume_step,
        tradable=i.tradable,
    )


def _catalogue_fetch(venue: Venue, match: str) -> catalogue.Catalogue:
    try:
        payload = catalogue.catalogue_payload(venue_config(venue))
        return catalogue.parse_catalogue(venue.kind, payload, match=match)
    except catalogue.CatalogueUnavailable as exc:
        raise ServiceError(
            "catalogue_unavailable", str(exc), status_code=status.HTTP_400_BAD_REQUEST
        ) from exc
    except catalogue.MalformedEntry as exc:
        raise ServiceError(
            "venue_error",
            f"{venue.code}: malformed catalogue: {exc}",
            status_code=status.HTTP_502_BAD_GATEWAY,
        ) from exc
    except VenueHttpError as exc:
        raise ServiceError("venue_error", str(exc), status_code=status.HTTP_502_BAD_GATEWAY) from exc


def _import_plan(
    venue: Venue, fetched: catalogue.Catalogue, match: str, *, lock: bool
) -> catalogue.ImportPlan:
    symbols = {e.symbol for e in fetched.entries}
    mappings = VenueSymbol.objects.filter(venue=venue).select_related("instrument")
    mapped = {m.venue_symbol: m.instrument.symbol for m in mappings}
    symbols |= {mapped[e.venue_symbol] for e in fetched.entries if e.venue_symbol in mapped}
    instruments = Instrument.objects.filter(symbol__in=symbols)
    if lock:
        instruments = instruments.select_for_update()
    return catalogue.plan_import(
        venue.code,
        fetched,
        match=match,
        instruments={i.symbol: _instrument_row(i) for i in instruments},
        mappings=[catalogue.MappingRow(m.venue_symbol, m.instrument.symbol, m.enabled) for m in mappings],
    )


def instruments_import(
    *,
    venue: Venue,
    match: str = "",
    dry_run: bool = False,
    expected: str | None = None,
    watch: bool = False,
    actor: User | None = None,
) -> catalogue.ImportPlan:
    """Create or update instruments and this venue's symbol mappings from the venue's catalogue.

    `dry_run` only plans (the preview). Otherwise all or nothing, in one transaction: a catalogue
    with a malformed matching entry writes nothing, and with `expected` (the fingerprint of the plan
    the operator confirmed) a catalogue that changed since the preview writes nothing either. New
    mappings are off the venue's watchlist: the import records what the venue lists, the watchlist
    decides what the market loop subscribes to; `watch` puts the imported symbols on it too, in the
    same transaction."""
    fetched = _catalogue_fetch(venue, match)  # outside the transaction: a venue call holds no lock
    if dry_run:
        return _import_plan(venue, fetched, match, lock=False)
    with transaction.atomic():
        Venue.objects.select_for_update().get(pk=venue.pk)  # one import or watchlist change at a time
        plan = _import_plan(venue, fetched, match, lock=True)
        if plan.errors:
            listed = "; ".join(f"{name}: {why}" for name, why in plan.errors[:5])
            more = f" (and {len(plan.errors) - 5} more)" if len(plan.errors) > 5 else ""
            raise ServiceError(
                "catalogue_malformed",
                f"{venue.code}: {len(plan.errors)} catalogue entr{'y' if len(plan.errors) == 1 else 'ies'} "
                f"cannot be imported, nothing was written: {listed}{more}",
                fields={"catalogue": [f"{name}: {why}" for name, why in plan.errors]},
            )
        if expected is not None and expected != plan.fingerprint:
            raise ServiceError(
                "catalogue_changed",
                f"{venue.code}'s catalogue or the instruments changed since the preview: nothing was "
                "written, review the new preview.",
                status_code=status.HTTP_409_CONFLICT,
            )
        _import_apply(venue, plan)
        if watch:
            imported = [i.entry.venue_symbol for i in plan.items if i.action != "skipped"]
            venue_watchlist_change(venue=venue, add=imported, actor=actor)
        if actor is not None:
            audit_record(
                actor=actor,
                action="venue.instruments_import",
                target=venue,
                details={
                    "match": match,
                    **{action: [i.symbol for i in plan.of(action)] for action in ("create", "update")},
                },
            )
    log.info("venue=%s instruments import %r: %s", venue.code, match, plan.counts)
    return plan


def _import_apply(venue: Venue, plan: catalogue.ImportPlan) -> None:
    versions.bump_on_commit(MARKET_VERSION)  # bulk writes send no model signals
    created = plan.of("create")
    # A whole catalogue is thousands of rows (Binance lists ~3000 symbols): one INSERT each table.
    instruments = Instrument.objects.bulk_create(
        [Instrument(symbol=item.symbol, **item.values) for item in created], batch_size=500
    )
    VenueSymbol.objects.bulk_create(
        [
            VenueSymbol(
                venue=venue, instrument=instrument, venue_symbol=item.entry.venue_symbol, enabled=False
            )
            for item, instrument in zip(created, instruments, strict=True)
        ],
        batch_size=500,
    )
    for item in plan.of("update"):
        Instrument.objects.filter(symbol=item.symbol).update(
            **{k: new for k, (_, new) in item.changes.items()}
        )
        if item.mapping == "create":
            VenueSymbol.objects.create(
                venue=venue,
                instrument=Instrument.objects.get(symbol=item.symbol),
                venue_symbol=item.entry.venue_symbol,
                enabled=False,
            )
        elif item.mapping == "rename":
            VenueSymbol.objects.filter(venue=venue, instrument__symbol=item.symbol).update(
                venue_symbol=item.entry.venue_symbol
            )


@dataclass
class WatchlistChange:
    added: list[str]
    removed: list[str]
    unchanged: list[str]


def _names(raw: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in raw if n.strip()))


def venue_watchlist_change(
    *, venue: Venue, add: Iterable[str] = (), remove: Iterable[str] = (), actor: User | None = None
) -> WatchlistChange:
    """Put symbols on or off a venue's watchlist (the mappings the market loop subscribes to), by
    venue name (BTC-USD) or our symbol (BTCUSD), any case. The running market loop applies it at its
    next reload. Every name must be mapped on the venue (import it first), else nothing changes."""
    add, remove = _names(add), _names(remove)
    both = sorted({n.upper() for n in add} & {n.upper() for n in remove})
    if both:
        raise ServiceError(
            "invalid_watchlist",
            f"Both added and removed: {', '.join(both)}.",
            fields={"remove": [f"{n} is also added." for n in both]},
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    with transaction.atomic():
        Venue.objects.select_for_update().get(pk=venue.pk)
        mappings = list(
            VenueSymbol.objects.select_for_update(of=("self",))
            .filter(venue=venue)
            .select_related("instrument")
        )
        index: dict[str, VenueSymbol] = {}
        for m in mappings:
            index.setdefault(m.instrument.symbol.upper(), m)
            index[m.venue_symbol.upper()] = m
        unknown = {
            side: [f"{n} is not mapped on {venue.code}." for n in names if n.upper() not in index]
            for side, names in (("add", add), ("remove", remove))
        }
        unknown = {side: errors for side, errors in unknown.items() if errors}
        if unknown:
            listed = ", ".join(n for n in [*add, *remove] if n.upper() not in index)
            raise ServiceError(
                "unknown_symbols",
                f"Not mapped on {venue.code}: {listed}. Import them from the venue's catalogue first.",
                fields=unknown,
                status_code=status.HTTP_400_BAD_REQUEST,
            )
        change = WatchlistChange([], [], [])
        for names, enabled, done in ((add, True, change.added), (remove, False, change.removed)):
            for name in names:
                mapping = index[name.upper()]
                if mapping.enabled == enabled:
                    change.unchanged.append(mapping.venue_symbol)
                    continue
                mapping.enabled = enabled
                mapping.save(update_fields=["enabled"])
                done.append(mapping.venue_symbol)
        watched = sum(m.enabled for m in mappings)
        if venue.kind == VenueKind.BINANCE and watched > BINANCE_MAX_SYMBOLS:
            # The adapter takes every symbol (its book ticker and its trades) on one combined
            # connection, which Binance caps.
            raise ServiceError(
                "watchlist_too_long",
                f"{venue.code} would watch {watched} symbols: Binance takes at most {BINANCE_MAX_STREAMS} "
                f"streams per connection, two per symbol ({BINANCE_MAX_SYMBOLS} symbols). "
                "Nothing was changed.",
                status_code=status.HTTP_400_BAD_REQUEST,
            )
        if actor is not None and (change.added or change.removed):
            audit_record(
                actor=actor,
                action="venue.watchlist_change",
                target=venue,
                details={"added": change.added, "removed": change.removed},
            )
    log.info("venue=%s watchlist: +%s -%s", venue.code, change.added, change.removed)
    return change


def instrument_create_for_import(*, symbol: str, digits: int) -> Instrument:
    """An instrument for a symbol found only in imported history: not tradable, with placeholder
    trading specs an operator reviews before enabling it. Six-letter symbols split 3/3 (EURUSD),
    others before a trailing USD/USDT/USDC/EUR quote currency."""
    quote = next(
        (q for q in ("USDT", "USDC", "USD", "EUR") if symbol.endswith(q) and len(symbol) > len(q)), ""
    )
    if len(symbol) == 6 and symbol.isalpha():
        base, quote = symbol[:3], symbol[3:]
    elif quote:
        base = symbol[: -len(quote)]
    else:
        raise ServiceError("symbol_unsplittable", f"{symbol}: base and quote currency cannot be told apart")
    digits = max(0, min(digits, 10))
    with transaction.atomic():
        instrument, created = Instrument.objects.get_or_create(
            symbol=symbol,
            defaults={
                "description": f"{symbol} (imported history, review before enabling)",
                "base_currency": base[:10],
                "quote_currency": quote[:10],
                "contract_size": Decimal(1),
                "digits": digits,
                "pip_size": Decimal(1).scaleb(-max(digits - 1, 0)),
                "volume_min": Decimal("0.01"),
                "volume_max": Decimal(100),
                "volume_step": Decimal("0.01"),
                "tradable": False,
            },
        )
    if created:
        log.info("symbol=%s instrument created disabled for imported history", symbol)
    return instrument


def candles_import(*, instrument: Instrument, timeframe: str, bars: list[legacy.LegacyBar]) -> int:
    """Store imported history bars (source "import", implausible ones with their `suspect` reason); a
    bar already stored for the same start, whatever its source, is kept as it is. Returns bars added."""
    if not bars:
        return 0
    starts = [datetime.fromtimestamp(b.start, UTC) for b in bars]
    with transaction.atomic():
        present = set(
            Candle.objects.filter(
                instrument=instrument, timeframe=timeframe, start__gte=min(starts), start__lte=max(starts)
            ).values_list("start", flat=True)
        )
        rows = [
            Candle(
                instrument=instrument,
                timeframe=timeframe,
                start=start,
                open=b.open,
                high=b.high,
                low=b.low,
                close=b.close,
                volume=Decimal(b.tick_count),
                tick_count=b.tick_count,
                source=CandleSource.IMPORT,
                suspect=b.suspect[:200],
            )
            for b, start in zip(bars, starts)
            if start not in present
        ]
        Candle.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
        if rows:
            versions.bump_on_commit(MARKET_VERSION)
    return len(rows)


LEGACY_LP_KINDS = {"BINANCE": VenueKind.BINANCE, "OANDA": VenueKind.OANDA}
_SECRET_SETTING = ("key", "secret", "token", "password", "pem")


def _legacy_venue_symbol(kind: str, instrument: Instrument) -> str:
    base, quote = instrument.base_currency, instrument.quote_currency
    if kind == VenueKind.OANDA:
        return f"{base}_{quote}"
    return f"{base}{'USDT' if quote == 'USD' else quote}".lower()


def lp_config_import(*, config: dict[str, Any]) -> dict[str, list[str]]:
    """Create the old broker's LPs (lp_config.json) as disabled venues with their symbols mapped to
    existing instruments; the primary LP gets the best (lowest) priority. Secret-looking settings go
    to the encrypted credentials, the rest to the venue's config. A venue code that exists is left as
    it is (a second run adds nothing). Returns codes and messages per outcome."""
    result: dict[str, list[str]] = {"created": [], "present": [], "errors": [], "notes": []}
    lps = config.get("lps")
    if not isinstance(lps, list):
        raise ServiceError("invalid", 'expected {"lps": [...], "primaryLp": ...}')
    entries = [lp for lp in lps if isinstance(lp, dict)]
    priorities = [
        lp["priority"] for lp in entries if isinstance(lp.get("priority"), int) and lp["priority"] >= 0
    ]
    best = max(min(priorities, default=1) - 1, 0)
    for lp in entries:
        code = slugify(str(lp.get("id") or ""))[:32]
        kind = LEGACY_LP_KINDS.get(str(lp.get("type") or "").upper())
        if not code or kind is None:
            result["errors"].append(
                f"{code or '?'}: type {lp.get('type')!r} is not a venue kind Livermore runs"
            )
            continue
        if Venue.objects.filter(code=code).exists():
            result["present"].append(code)
            continue
        raw_settings = lp.get("settings")
        settings_: dict[str, Any] = raw_settings if isinstance(raw_settings, dict) else {}
        secret = {k: v for k, v in settings_.items() if any(word in k.lower() for word in _SECRET_SETTING)}
        raw_priority = lp.get("priority")
        priority = raw_priority if isinstance(raw_priority, int) and raw_priority >= 0 else 10
        if code == slugify(str(config.get("primaryLp") or "")):
            priority = best
        symbols = [str(s).upper() for s in lp.get("symbols") or []]
        instruments = {i.symbol: i for i in Instrument.objects.filter(symbol__in=symbols)}
        with transaction.atomic():
            venue = Venue.objects.create(
                code=code,
                name=str(lp.get("name") or code)[:100],
                kind=kind,
                enabled=False,
                priority=priority,
                config={k: v for k, v in settings_.items() if k not in secret},
                credentials=json.dumps(secret) if secret else "",
            )
            VenueSymbol.objects.bulk_create(
                [
                    VenueSymbol(
                        venue=venue, instrument=i, venue_symbol=_legacy_venue_symbol(kind, i), enabled=False
                    )
                    for i in instruments.values()
                ]
            )
            versions.bump_on_commit(MARKET_VERSION)
        result["created"].append(code)
        missing = sorted(set(symbols) - set(instruments))
        if missing:
            result["notes"].append(
                f"{code}: symbols that are not instruments, not mapped: {', '.join(missing)}"
            )
    return result
