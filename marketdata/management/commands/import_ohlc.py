"""`manage.py import_ohlc DIR [--create-instruments]`: the replaced broker's OHLC files
(DIR/{SYMBOL}/{TF}.json, or DIR/ohlc/..., TF one of M1 M5 M15 H1 H4 D1) into the candles, idempotently.
Implausible bars are imported flagged (`suspect`) and listed; bad files and records are reported with
their line and skipped (docs/migration.md)."""

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from kernel.errors import ServiceError
from marketdata import legacy
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Instrument
from marketdata.services import candles_import, instrument_create_for_import


class Command(BaseCommand):
    help = "Import the replaced broker's OHLC files (a second run adds nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=Path, help="The old data/ohlc folder (or data/ holding ohlc/)")
        parser.add_argument(
            "--create-instruments",
            action="store_true",
            help="Create a symbol that is not an instrument yet, not tradable, instead of skipping it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["dir"]
        if (root / "ohlc").is_dir():
            root = root / "ohlc"
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder")
        files = sorted(
            (folder.name.upper(), path)
            for folder in root.iterdir()
            if folder.is_dir()
            for path in folder.glob("*.json")
        )
        known = {i.symbol: i for i in Instrument.objects.filter(symbol__in={s for s, _ in files})}
        counts: Counter[str] = Counter()
        problems: list[legacy.Problem] = []
        suspects: list[str] = []
        unknown: set[str] = set()
        for symbol, path in tqdm(files, unit="file", file=self.stderr, disable=None):
            timeframe = legacy.OHLC_TIMEFRAMES.get(path.stem.upper())
            if timeframe is None:
                problems.append(
                    legacy.Problem(
                        str(path), None, f"not a timeframe file ({', '.join(legacy.OHLC_TIMEFRAMES)})"
                    )
                )
                counts["files_skipped"] += 1
                continue
            if symbol not in known and not options["create_instruments"]:
                unknown.add(symbol)
                counts["files_skipped"] += 1
                continue
            try:
                read = legacy.read_ohlc_file(path, TIMEFRAME_SECONDS[timeframe])
            except legacy.LegacyFileError as exc:
                problems.append(legacy.Problem(str(path), exc.line, exc.message))
                counts["files_skipped"] += 1
                continue
            if symbol not in known:
                digits = max((legacy.decimals_of(float(b.close)) for b in read.bars[:100]), default=0)
                try:
                    known[symbol] = instrument_create_for_import(symbol=symbol, digits=digits)
                except ServiceError as exc:
                    problems.append(legacy.Problem(str(path), None, exc.message))
                    unknown.add(symbol)
                    counts["files_skipped"] += 1
                    continue
                counts["instruments_created"] += 1
            added = candles_import(instrument=known[symbol], timeframe=timeframe, bars=read.bars)
            problems.extend(read.problems)
            flagged = [b for b in read.bars if b.suspect]
            suspects += [
                f"  {path}:{b.line}: {symbol} {timeframe} "
                f"{datetime.fromtimestamp(b.start, UTC):%Y-%m-%d %H:%M} {b.suspect}"
                for b in flagged
            ]
            counts.update(
                files=1,
                bars=len(read.bars),
                added=added,
                present=len(read.bars) - added,
                suspect=len(flagged),
                bad=len(read.problems),
            )
        self._summary(counts, problems, suspects, unknown)

    def _summary(
        self, counts: Counter[str], problems: list[legacy.Problem], suspects: list[str], unknown: set[str]
    ) -> None:
        write = self.stdout.write
        created = counts["instruments_created"]
        write(
            f"files: {counts['files']} imported, {counts['files_skipped']} skipped"
            + (f", {created} instrument(s) created not tradable" if created else "")
        )
        write(
            f"bars: {counts['bars']} read, {counts['added']} added, {counts['present']} already stored, "
            f"{counts['suspect']} suspect, {counts['bad']} bad"
        )
        if unknown:
            write(
                "symbols skipped (not instruments; --create-instruments creates them): "
                + ", ".join(sorted(unknown))
            )
        if suspects:
            write(f"suspect bars, imported flagged and not to be trusted ({len(suspects)}):")
            for line in suspects:
                write(line)
        if problems:
            write(f"errors ({len(problems)}):")
            for problem in problems:
                write(f"  {problem}")
