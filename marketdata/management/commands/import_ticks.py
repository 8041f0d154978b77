"""`manage.py import_ticks DIR [--create-instruments]`: the replaced broker's tick day files
(DIR/{SYMBOL}/{YYYY-MM-DD}.json, or DIR/ticks/...) into the tick table, idempotently, one transaction
per file. Bad files and records are reported with their line and skipped (docs/migration.md)."""

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone
from tqdm import tqdm

from kernel.db import database_conninfo
from kernel.errors import ServiceError
from marketdata import legacy, ticks
from marketdata.models import Instrument
from marketdata.services import instrument_create_for_import


def day_files(root: Path) -> list[tuple[str, Path]]:
    """(symbol, file) of every JSON file one level below `root` (or below `root`/ticks), sorted."""
    if (root / "ticks").is_dir():
        root = root / "ticks"
    return sorted(
        (folder.name.upper(), path)
        for folder in root.iterdir()
        if folder.is_dir()
        for path in folder.glob("*.json")
    )


class Command(BaseCommand):
    help = "Import the replaced broker's tick day files (a second run adds nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=Path, help="The old data/ticks folder (or data/ holding ticks/)")
        parser.add_argument(
            "--create-instruments",
            action="store_true",
            help="Create a symbol that is not an instrument yet, not tradable, instead of skipping it",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=2,
            help="Files imported at once, each on its own connection (default 2)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["dir"]
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder")
        if not 1 <= options["jobs"] <= 16:
            raise CommandError("--jobs must be 1 to 16")
        counts: Counter[str] = Counter()
        problems: list[legacy.Problem] = []
        unknown: set[str] = set()
        dated: list[tuple[str, Path, date]] = []
        for symbol, path in day_files(root):
            try:
                dated.append((symbol, path, date.fromisoformat(path.stem)))
            except ValueError:
                problems.append(legacy.Problem(str(path), None, "not named YYYY-MM-DD.json"))
                counts["files_skipped"] += 1
        known = {i.symbol: i for i in Instrument.objects.filter(symbol__in={s for s, _, _ in dated})}
        retention_start = timezone.now().date() - timedelta(days=settings.TICK_RETENTION_DAYS)
        old_days = 0
        careful: list[tuple[str, Path, date]] = []  # read record by record, on this connection
        with tqdm(total=len(dated), unit="file", file=self.stderr, disable=None) as bar:
            whole = []
            for symbol, path, day in dated:
                if symbol in known:
                    whole.append((symbol, path, day))
                elif options["create_instruments"]:
                    careful.append((symbol, path, day))
                else:
                    unknown.add(symbol)
                    counts["files_skipped"] += 1
                    bar.update(1)
            for (symbol, path, day), outcome in self._whole_files(whole, options["jobs"]):
                bar.update(1)
                if isinstance(outcome, legacy.LegacyFileError):
                    problems.append(legacy.Problem(str(path), outcome.line, outcome.message))
                    counts["files_skipped"] += 1
                elif outcome is None:
                    careful.append((symbol, path, day))
                else:
                    rows, repeated, added = outcome
                    counts.update(files=1, rows=rows, added=added, present=rows - added, repeated=repeated)
                    old_days += day < retention_start
                    bar.set_postfix(rows=counts["rows"], added=counts["added"])
            connection.ensure_connection()
            conn = connection.connection
            for symbol, path, day in careful:
                if symbol not in known:
                    bar.update(1)
                try:
                    read = legacy.read_tick_file(path, symbol)
                except legacy.LegacyFileError as exc:
                    problems.append(legacy.Problem(str(path), exc.line, exc.message))
                    counts["files_skipped"] += 1
                    continue
                if symbol not in known:
                    try:
                        known[symbol] = instrument_create_for_import(symbol=symbol, digits=read.max_decimals)
                    except ServiceError as exc:
                        problems.append(legacy.Problem(str(path), None, exc.message))
                        unknown.add(symbol)
                        counts["files_skipped"] += 1
                        continue
                    counts["instruments_created"] += 1
                added = ticks.ticks_import(conn, symbol=symbol, rows=read.rows)
                problems.extend(read.problems)
                old_days += day < retention_start
                counts.update(
                    files=1,
                    rows=len(read.rows),
                    added=added,
                    present=len(read.rows) - added,
                    repeated=read.duplicates,
                    bad=len(read.problems),
                )
        self._summary(counts, problems, unknown, old_days)

    def _whole_files(
        self, files: list[tuple[str, Path, date]], jobs: int
    ) -> Iterator[tuple[tuple[str, Path, date], tuple[int, int, int] | legacy.LegacyFileError | None]]:
        """Each file handed whole to PostgreSQL (ticks_import_json), `jobs` at a time on connections
        of their own; None for a file with a bad record. The day partitions are made first, so that
        the files' transactions never create one concurrently."""
        if not files:
            return
        conninfo = database_conninfo()
        with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
            if ticks.is_partitioned(cur):
                days = {day + timedelta(days=d) for _, _, day in files for d in (-1, 0, 1)}
                ticks.partitions_ensure(cur, days)
        local = threading.local()
        opened: list[psycopg.Connection[Any]] = []
        lock = threading.Lock()

        def one(item: tuple[str, Path, date]) -> tuple[int, int, int] | legacy.LegacyFileError | None:
            symbol, path, day = item
            try:
                text = legacy.read_text(path)
            except legacy.LegacyFileError as exc:
                return exc
            if getattr(local, "conn", None) is None:
                local.conn = psycopg.connect(conninfo, autocommit=True, application_name="import_ticks")
                with lock:
                    opened.append(local.conn)
            return ticks.ticks_import_json(local.conn, symbol=symbol, doc=text, day=day)

        try:
            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="import-ticks") as pool:
                yield from zip(files, pool.map(one, files))
        finally:
            for conn in opened:
                conn.close()

    def _summary(
        self, counts: Counter[str], problems: list[legacy.Problem], unknown: set[str], old_days: int
    ) -> None:
        write = self.stdout.write
        write(
            f"files: {counts['files']} imported, {counts['files_skipped']} skipped"
            + (
                f", {counts['instruments_created']} instrument(s) created not tradable"
                if counts["instruments_created"]
                else ""
            )
        )
        write(
            f"ticks: {counts['rows']} read, {counts['added']} added, {counts['present']} already stored, "
            f"{counts['repeated']} repeated in a row, {counts['bad']} bad"
        )
        if unknown:
            write(
                "symbols skipped (not instruments; --create-instruments creates them): "
                + ", ".join(sorted(unknown))
            )
        if old_days:
            write(
                f"warning: {old_days} day file(s) are older than TICK_RETENTION_DAYS "
                f"({settings.TICK_RETENTION_DAYS}): the retention job drops those days"
            )
        if problems:
            write(f"errors ({len(problems)}):")
            for problem in problems:
                write(f"  {problem}")
