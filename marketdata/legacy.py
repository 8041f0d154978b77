"""Readers of the replaced broker's tick and OHLC JSON files (docs/migration.md). No Django here.

A tick day file `ticks/{SYMBOL}/{YYYY-MM-DD}.json` is one JSON array of `{"symbol", "bid", "ask",
"timestamp", "lp", ...}`; an OHLC file `ohlc/{SYMBOL}/{TF}.json` one JSON array of `{"time", "open",
"high", "low", "close", "volume"}`. Days that system moved to Git LFS are pointer files, not JSON.
Readers return what they could use and the problems they met, each with the line it is on, and never
raise for a bad record: one bad file or record must not stop an import of years of them.
"""

import json
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

LFS_POINTER = "version https://git-lfs.github.com/spec/v1"
# The old system's timeframe names -> ours.
OHLC_TIMEFRAMES = {"M1": "1m", "M5": "5m", "M15": "15m", "H1": "1h", "H4": "4h", "D1": "1d"}
# A bar whose range, or whose jump from the previous close, is this many times the file's median
# range is implausible (the old system's 1.08 -> 0.21 within an hour): imported flagged, not trusted.
IMPLAUSIBLE_RANGE_FACTOR = 20


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


class LegacyFileError(Exception):
    """A file that cannot be read at all (not JSON, a Git LFS pointer, not an array)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def read_text(path: Path) -> str:
    """The text of a data file; raises LegacyFileError for an unreadable file or a Git LFS pointer."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LegacyFileError(f"unreadable: {exc}") from exc
    if text.startswith(LFS_POINTER):
        raise LegacyFileError("a Git LFS pointer, not the data: fetch it with `git lfs pull` first")
    return text


def read_array(path: Path) -> tuple[list[Any], str]:
    """The JSON array in `path` and its text (to locate records later)."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LegacyFileError(f"malformed JSON: {exc.msg}", exc.lineno) from exc
    if not isinstance(data, list):
        raise LegacyFileError("not a JSON array", 1)
    return data, text


def element_lines(text: str) -> Iterator[int]:
    """The line each element of the JSON array in `text` starts on, in order (text must be valid)."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    length = len(text)
    while True:
        while pos < length and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= length or text[pos] == "]":
            return
        yield text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)


def _lines_of(text: str, indexes: list[int]) -> dict[int, int]:
    wanted = set(indexes)
    return {i: line for i, line in enumerate(element_lines(text)) if i in wanted}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TickFile:
    """A tick day file read for COPY: `rows` are lines of PostgreSQL's text COPY format for
    (ts, symbol, venue, bid, ask, bid_size, ask_size, seq), the timestamp as written (PostgreSQL
    stores it in UTC whatever its offset)."""

    rows: list[str] = field(default_factory=list)
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)
    max_decimals: int = 0


def read_tick_file(path: Path, symbol: str) -> TickFile:
    """Read one tick day file of `symbol`; raises LegacyFileError for a file that is not usable."""
    data, text = read_array(path)
    result = TickFile()
    rows = result.rows
    bad: dict[int, str] = {}
    previous: tuple[object, ...] | None = None
    fromiso = datetime.fromisoformat
    for index, record in enumerate(data):
        try:
            stamp, bid, ask, lp = record["timestamp"], record["bid"], record["ask"], record.get("lp")
        except (TypeError, KeyError) as exc:
            bad[index] = f"not a tick (missing {exc})" if isinstance(exc, KeyError) else "not a tick object"
            continue
        key = (stamp, bid, ask, lp)
        if key == previous:
            result.duplicates += 1
            continue
        previous = key
        if record.get("symbol", symbol) != symbol:
            bad[index] = f"symbol {record.get('symbol')!r} in the file of {symbol}"
            continue
        if not (_number(bid) and _number(ask) and 0 < bid <= ask):
            bad[index] = f"bid {bid!r} and ask {ask!r} are not a quote"
            continue
        if not isinstance(lp, str) or not lp.strip() or len(lp) > 32 or "\t" in lp or "\\" in lp:
            bad[index] = f"lp {lp!r} is not a feed name"
            continue
        try:
            when = fromiso(stamp)
        except (TypeError, ValueError):
            bad[index] = f"timestamp {stamp!r} is not RFC 3339"
            continue
        if when.tzinfo is None:
            bad[index] = f"timestamp {stamp!r} has no UTC offset"
            continue
        rows.append(f"{stamp}\t{symbol}\t{lp.strip().lower()}\t{bid!r}\t{ask!r}\t\\N\t\\N\t0\n")
    if bad:
        lines = _lines_of(text, list(bad))
        result.problems = [Problem(str(path), lines.get(i), message) for i, message in bad.items()]
    for record in data[:100]:
        if isinstance(record, dict):
            for name in ("bid", "ask"):
                result.max_decimals = max(result.max_decimals, decimals_of(record.get(name)))
    return result


def decimals_of(value: object) -> int:
    if not _number(value):
        return 0
    exponent = Decimal(repr(value)).as_tuple().exponent
    return min(-exponent, 10) if isinstance(exponent, int) and exponent < 0 else 0


@dataclass(frozen=True)
class LegacyBar:
    start: int  # Unix seconds, UTC
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    tick_count: int
    line: int
    suspect: str  # why the bar is implausible, or ""


@dataclass
class OhlcFile:
    bars: list[LegacyBar] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _price(value: object) -> Decimal:
    # repr gives the shortest text that reads back as the same float: the digits the file holds.
    return Decimal(repr(value))


def read_ohlc_file(path: Path, timeframe_seconds: int) -> OhlcFile:
    """Read one OHLC file; bars whose range or gap is many times the file's median range are flagged."""
    data, text = read_array(path)
    lines = list(element_lines(text))
    result = OhlcFile()
    parsed: list[tuple[int, int, tuple[Decimal, Decimal, Decimal, Decimal], int]] = []
    for index, record in enumerate(data):
        line = lines[index]
        try:
            start, values, volume = (
                record["time"],
                [record[k] for k in ("open", "high", "low", "close")],
                record.get("volume", 0),
            )
        except (TypeError, KeyError) as exc:
            message = f"not a bar (missing {exc})" if isinstance(exc, KeyError) else "not a bar object"
            result.problems.append(Problem(str(path), line, message))
            continue
        if not isinstance(start, int) or isinstance(start, bool) or start < 0 or start % timeframe_seconds:
            result.problems.append(Problem(str(path), line, f"time {start!r} is not a bar start"))
            continue
        if not all(_number(v) and v > 0 for v in values) or not _number(volume) or volume < 0:
            result.problems.append(Problem(str(path), line, "prices must be positive numbers, volume >= 0"))
            continue
        o, h, low, c = (_price(v) for v in values)
        if not (low <= min(o, c) and h >= max(o, c)):
            result.problems.append(Problem(str(path), line, "high/low do not contain open and close"))
            continue
        parsed.append((line, start, (o, h, low, c), int(volume)))
    ranges = [p[2][1] - p[2][2] for p in parsed if p[2][1] > p[2][2]]
    median = statistics.median(ranges) if ranges else Decimal(0)
    limit = median * IMPLAUSIBLE_RANGE_FACTOR
    previous_close: Decimal | None = None
    for line, start, (o, h, low, c), volume in sorted(parsed, key=lambda p: p[1]):
        suspect = ""
        if limit > 0 and h - low > limit:
            suspect = f"range {h - low} is over {IMPLAUSIBLE_RANGE_FACTOR}x the file's median {median}"
        elif limit > 0 and previous_close is not None and abs(o - previous_close) > limit:
            suspect = f"opens {o} against a previous close of {previous_close}"
        if not suspect:
            previous_close = c
        result.bars.append(LegacyBar(start, o, h, low, c, volume, line, suspect))
    return result
