import time
from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings

from marketdata.backfill import last_day
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Instrument, Venue
from marketdata.selectors import warm_up_targets
from marketdata.services import (
    backfill_job_run,
    candles_backfill,
    feed_health_snapshot_take,
    tick_partitions_maintain,
)


@shared_task(ignore_result=True)
def feed_health_snapshot() -> int:
    return len(feed_health_snapshot_take())


@shared_task(ignore_result=True)
def tick_retention() -> dict[str, list[str]]:
    return tick_partitions_maintain(retention_days=settings.TICK_RETENTION_DAYS)


@shared_task(ignore_result=True)
def backfill_candles(instrument_id: int, venue_id: int, timeframe: str, start: str, end: str) -> int:
    result = candles_backfill(
        instrument=Instrument.objects.get(pk=instrument_id),
        venue=Venue.objects.get(pk=venue_id),
        timeframe=timeframe,
        start=datetime.fromisoformat(start),
        end=datetime.fromisoformat(end),
    )
    return result.added + result.replaced


@shared_task(ignore_result=True)
def backfill_job(job_id: int) -> str:
    """An operator's backfill (admin action, manage.py backfill --queue): progress in its row."""
    return backfill_job_run(job_id=job_id).state


@shared_task(ignore_result=True)
def backfill_recent_candles() -> int:
    """Beat job: re-fetch the last day of every timeframe of each instrument from its best venue
    with history (one venue per instrument, as the warm-up, so a series is one venue's bars)."""
    jobs = [(vs, tf) for vs in warm_up_targets() for tf in TIMEFRAME_SECONDS]
    for vs, timeframe in jobs:
        backfill_candles_enqueue(instrument_id=vs.instrument_id, venue_id=vs.venue_id, timeframe=timeframe)
    return len(jobs)


def backfill_candles_enqueue(*, instrument_id: int, venue_id: int, timeframe: str) -> None:
    """Queue the backfill of the last day of one timeframe (once the current transaction commits)."""
    start, end = last_day(timeframe, int(time.time()))
    backfill_candles.delay_on_commit(
        instrument_id,
        venue_id,
        timeframe,
        datetime.fromtimestamp(start, UTC).isoformat(),
        datetime.fromtimestamp(end, UTC).isoformat(),
    )
