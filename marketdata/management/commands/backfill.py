"""`manage.py backfill SYMBOL [--tf 1m,1h] [--days N] [--venue CODE]`: fetch a symbol's closed bars
from a venue with history, here and now, one job per timeframe, with a progress bar for each. The
jobs are recorded like the admin's, so the admin shows them too."""

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from kernel.errors import ServiceError
from marketdata.backfill import FetchProgress
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import BackfillJob, Instrument, Venue
from marketdata.selectors import backfill_targets
from marketdata.services import backfill_job_create, backfill_job_run


class Command(BaseCommand):
    help = "Backfill a symbol's candles from a venue's public (or token) history endpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol", help="Our instrument symbol, e.g. BTCUSD")
        parser.add_argument(
            "--tf", default=",".join(TIMEFRAME_SECONDS), help="Comma-separated timeframes (default all)"
        )
        parser.add_argument("--days", type=float, default=1.0, help="How far back, in days (default 1)")
        parser.add_argument("--venue", help="Venue code (default: the best-priority venue with history)")

    def handle(self, *args: Any, **options: Any) -> None:
        instrument = Instrument.objects.filter(symbol=options["symbol"].upper()).first()
        if instrument is None:
            raise CommandError(f"unknown symbol {options['symbol']!r}")
        timeframes = [tf.strip() for tf in options["tf"].split(",") if tf.strip()]
        unknown = [tf for tf in timeframes if tf not in TIMEFRAME_SECONDS]
        if unknown or not timeframes:
            raise CommandError(f"--tf takes timeframes among {', '.join(TIMEFRAME_SECONDS)}, not {unknown}")
        if not 0 < options["days"] <= 3650:
            raise CommandError("--days must be more than 0 and at most 3650")
        venue = self._venue(instrument, options["venue"])
        end = datetime.now(UTC)
        start = end - timedelta(days=options["days"])
        failed = 0
        for timeframe in timeframes:
            try:
                job = backfill_job_create(
                    instrument=instrument, venue=venue, timeframe=timeframe, start=start, end=end
                )
            except ServiceError as exc:
                raise CommandError(exc.message) from exc
            buckets = int((end - start).total_seconds()) // TIMEFRAME_SECONDS[timeframe] + 1
            with tqdm(
                total=buckets, desc=f"{instrument.symbol} {timeframe}", unit="bar", file=self.stderr
            ) as bar:

                def advance(progress: FetchProgress, bar: tqdm = bar) -> None:
                    bar.update(progress.bars - bar.n)
                    bar.set_postfix(pages=progress.pages, waits=progress.rate_limit_waits)

                job = backfill_job_run(job_id=job.pk, progress=advance)
            if job.state == BackfillJob.State.DONE:
                self.stdout.write(
                    f"{instrument.symbol} {timeframe} from {venue.code}: {job.bars_fetched} fetched, "
                    f"{job.bars_added} added, {job.bars_replaced} replaced in {job.pages} page(s), "
                    f"{job.rate_limit_waits} rate-limit wait(s)"
                )
            else:
                failed += 1
                self.stderr.write(f"{instrument.symbol} {timeframe} from {venue.code} failed: {job.error}")
        if failed:
            raise CommandError(f"{failed} of {len(timeframes)} timeframe(s) failed")

    def _venue(self, instrument: Instrument, code: str | None) -> Venue:
        if code is not None:
            venue = Venue.objects.filter(code=code).first()
            if venue is None:
                raise CommandError(f"unknown venue {code!r}")
            return venue
        targets = backfill_targets(instrument=instrument)
        if not targets:
            raise CommandError(f"no enabled venue with candle history serves {instrument.symbol}")
        return targets[0].venue
