import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import status

from livermore import redis
from livermore.errors import ServiceError
from livermore.users.models import User
from livermore.users.services import audit_record
from marketdata import ticks
from marketdata.adapters.base import MalformedMessage
from marketdata.adapters.rest import VenueHttpError
from marketdata.backfill import BACKFILL_KINDS, BackfillUnavailable, venue_bars
from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.models import Candle, FeedHealthSnapshot, Instrument, Venue, VenueSymbol
from marketdata.publisher import ticker_key
from marketdata.selectors import feed_health, venue_config

log = logging.getLogger(__name__)


def venue_set_enabled(*, venue: Venue, enabled: bool, changed_by: User) -> bool:
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
        audit_record(actor=changed_by, action="venue.enable" if enabled else "venue.disable", target=locked)
    venue.enabled = enabled
    log.info("venue=%s %s by %s", venue.code, "enabled" if enabled else "disabled", changed_by)
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


def candles_store(*, bars: Iterable[Bar], source: str = "live") -> int:
    """Insert closed bars; a bar already stored (same instrument, timeframe, start) is kept as it is.
    Bars of unknown symbols are skipped. Returns how many bars were offered for known symbols."""
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
            source=source,
            partial=b.partial,
        )
        for b in bars
        if b.symbol in ids and not b.synthetic
    ]
    Candle.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return len(rows)


def tick_partitions_maintain(*, retention_days: int, days_ahead: int = 2) -> dict[str, list[str]]:
    """Drop tick days older than `retention_days` and create the coming days' partitions."""
    today = timezone.now().date()
    with connection.cursor() as cursor:
        dropped = ticks.ticks_drop_before(cursor, today - timedelta(days=retention_days))
        created = (
            ticks.partitions_ensure(cursor, [today + timedelta(days=i) for i in range(days_ahead + 1)])
            if ticks.is_partitioned(cursor)
            else []
        )
    return {"dropped": dropped, "created": created}


def _ohlc(bar: Bar) -> dict[str, Decimal | int]:
    return {
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "tick_count": bar.tick_count,
    }


def candles_backfill(
    *, instrument: Instrument, timeframe: str, start: datetime, end: datetime, venue: Venue
) -> int:
    """Fetch the venue's closed bars with start in [start, end) and store those we lack.

    Idempotent: a bar already stored is kept as it is, except a partial live bar (its period began
    before the market loop was running, so quotes are missing from it), which the venue's bar of the
    whole, ended period replaces. Returns how many bars were added or replaced."""
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
        Candle(instrument=instrument, timeframe=timeframe, start=when, source=venue.code, **_ohlc(bar))
        for when, bar in starts.items()
        if when not in stored
    ]
    # ignore_conflicts: a live bar closed meanwhile wins, never overwritten.
    Candle.objects.bulk_create(missing, ignore_conflicts=True, batch_size=1000)
    ended = int(timezone.now().timestamp()) - TIMEFRAME_SECONDS[timeframe]
    replaced = 0
    for when, candle in stored.items():
        bar = starts[when]
        if candle.source == "live" and candle.partial and bar.start <= ended:
            # Conditional on the row still being partial and live: safe against a concurrent backfill.
            replaced += Candle.objects.filter(pk=candle.pk, source="live", partial=True).update(
                source=venue.code, partial=False, **_ohlc(bar)
            )
    log.info(
        "venue=%s backfill %s %s %s..%s: %d fetched, %d added, %d partial replaced",
        venue.code,
        instrument.symbol,
        timeframe,
        start.isoformat(),
        end.isoformat(),
        len(bars),
        len(missing),
        replaced,
    )
    return len(missing) + replaced
