"""Pieces the streaming adapters share: the silence watchdog, venue timestamps, strict decimals."""

import asyncio
import functools
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from .base import Adapter, MalformedMessage

T = TypeVar("T")


class SilenceTimeout(Exception):
    """The venue sent nothing (not even a heartbeat) for the adapter's silence timeout."""


async def watched(adapter: Adapter, source: AsyncIterable[T]) -> AsyncIterator[T]:
    """Yield what `source` yields; raise SilenceTimeout when nothing arrives within the adapter's
    `silence_timeout_s`, so `Adapter.run()` drops the connection and reconnects."""
    iterator = aiter(source)
    while True:
        try:
            async with asyncio.timeout(adapter.silence_timeout_s):
                item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise SilenceTimeout(f"no message for {adapter.silence_timeout_s:g} s") from None
        adapter.message_received()
        yield item


def rfc3339_ns(value: str) -> int:
    """RFC3339 with up to 9 fractional digits (Coinbase, OANDA) -> integer ns since the epoch (UTC).

    datetime keeps microseconds only, so the fraction is parsed apart."""
    if not isinstance(value, str) or not value.endswith("Z"):
        raise MalformedMessage(f"not an RFC3339 UTC time: {value!r}")
    head, _, fraction = value[:-1].partition(".")
    if fraction and (not fraction.isdigit() or len(fraction) > 9):
        raise MalformedMessage(f"bad fractional seconds in {value!r}")
    return _epoch_seconds(head) * 1_000_000_000 + int(fraction.ljust(9, "0") if fraction else 0)


@functools.lru_cache(maxsize=256)
def _epoch_seconds(head: str) -> int:
    # strptime costs microseconds and a stream's messages share their second: parse each second once.
    try:
        return int(datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    except ValueError as exc:
        raise MalformedMessage(f"not an RFC3339 UTC time: {head!r}") from exc


def ns_to_rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def price(value: object) -> Decimal:
    """A venue price or size sent as a string: finite and not negative, or the frame is malformed."""
    if not isinstance(value, str):
        raise MalformedMessage(f"expected a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise MalformedMessage(f"not a decimal: {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise MalformedMessage(f"not a usable price: {value!r}")
    return number
