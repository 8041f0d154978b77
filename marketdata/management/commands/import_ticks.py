"""`manage.py import_ticks DIR [--create-instruments]`: the replaced broker's tick day files
(DIR/{SYMBOL}/{YYYY-MM-DD}.json, or DIR/ticks/...) into the tick table, idempotently, one transaction
per file. Bad files and records are reported with their line and skipped (docs/migration.md)."""

from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone
from tqdm import tqdm

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

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["dir"]
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder")
        files = day_files(root)
        known = {i.symbol: i for i in Instrument.objects.filter(symbol__in={s for s, _ in files})}
        counts: Counter[str] = Counter()
        problems: list[legacy.Problem] = []
        unknown: set[str] = set()
        old_days = 0
        retention_start = timezone.now().date() - timedelta(days=settings.TICK_RETENTION_DAYS)
        connection.ensure_connection()
        conn = connection.connection
        with tqdm(total=len(files), unit="file", file=self.stderr, disable=None) as bar:
            for symbol, path in files:
                bar.update(1)
                try:
                    day = date.fromisoformat(path.stem)
                except ValueError:
                    problems.append(legacy.Problem(str(path), None, "not named YYYY-MM-DD.json"))
                    counts["files_skipped"] += 1
                    continue
                if symbol not in known and not options["create_instruments"]:
                    unknown.add(symbol)
                    counts["files_skipped"] += 1
                    continue
                try:
                    text = legacy.read_text(path)
                    fast = (
                        ticks.ticks_import_json(conn, symbol=symbol, doc=text, day=day)
                        if symbol in known
                        else None
                    )
                    read = legacy.read_tick_file(path, symbol) if fast is None else None
                except legacy.LegacyFileError as exc:
                    problems.append(legacy.Problem(str(path), exc.line, exc.message))
                    counts["files_skipped"] += 1
                    continue
                if fast is not None:
                    rows, repeated, added = fast
                    counts.update(files=1, rows=rows, added=added, present=rows - added, repeated=repeated)
                    old_days += day < retention_start
                    bar.set_postfix(rows=counts["rows"], added=counts["added"])
                    continue
                assert read is not None
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
                bar.set_postfix(rows=counts["rows"], added=counts["added"])
        self._summary(counts, problems, unknown, old_days)

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
