"""FIX tag=value text helpers with no QuickFIX and no Django: parsing for the hot path and
redaction for the message log."""

import re
from datetime import UTC, datetime
from functools import lru_cache

SOH = "\x01"
BUY, SELL = "1", "2"  # Side (54)
MARKET, LIMIT, STOP, STOP_LIMIT = "1", "2", "3", "4"  # OrdType (40)

# Logon Password, NewPassword, and RawData (which some venues use for credentials).
SECRET_TAGS = frozenset({"554", "925", "96"})
_SECRET = re.compile(r"(?:(?<=\x01)|^)(554|925|96)=[^\x01]*")


def redact(raw: str) -> str:
    """The message as shown in the log: secrets replaced by ***, SOH shown as |."""
    return _SECRET.sub(r"\1=***", raw).replace(SOH, "|")


def fields(raw: str) -> list[tuple[str, str]]:
    """Tag/value pairs in wire order (repeating groups stay flat; callers split them)."""
    out = []
    for part in raw.split(SOH):
        if part:
            tag, _, value = part.partition("=")
            out.append((tag, value))
    return out


def field_map(raw: str) -> dict[str, str]:
    """First value of every tag: for messages without repeating groups."""
    out: dict[str, str] = {}
    for tag, value in fields(raw):
        out.setdefault(tag, value)
    return out


def split_groups(pairs: list[tuple[str, str]], first_tag: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Body fields before the first group entry, and one dict per entry (an entry starts at
    `first_tag`, the group's delimiter); trailer fields after the last entry go to the last entry."""
    head: dict[str, str] = {}
    entries: list[dict[str, str]] = []
    for tag, value in pairs:
        if tag == first_tag:
            entries.append({})
        if entries:
            entries[-1].setdefault(tag, value)
        else:
            head.setdefault(tag, value)
    return head, entries


def msg_type(raw: str) -> str:
    """MsgType (35), the third field of every message (after BeginString and BodyLength)."""
    start = raw.index(SOH + "35=") + 4
    return raw[start : raw.index(SOH, start)]


@lru_cache(maxsize=8)
def _epoch_s(base: str) -> int:
    # strptime costs more than the rest of a market data message's handling; messages in a burst
    # share their second
    return int(datetime.strptime(base, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC).timestamp())


def utc_timestamp_ns(value: str) -> int:
    """UTCTimestamp YYYYMMDD-HH:MM:SS[.sss[sss[sss]]] as integer ns since the epoch."""
    base, _, frac = value.partition(".")
    return _epoch_s(base) * 1_000_000_000 + int((frac + "000000000")[:9])


def utc_date_time_ns(date: str, time_: str) -> int:
    """MDEntryDate (YYYYMMDD) + MDEntryTime (HH:MM:SS[.sss]) as integer ns since the epoch."""
    return utc_timestamp_ns(f"{date}-{time_}")
