"""Channels of /ws/v1/stream and how producers publish to them.

A channel name is `kind:arg` (`quotes:EURUSD`, `candles:EURUSD:1m`, `account:1001`, `alerts`).
settings.STREAM_CHANNELS maps each kind to a class implementing StreamChannel; apps register theirs
there, so marketdata imports none of them. Producers in any process call `stream_send` (sync;
`stream_send_many` for many events at once) or `astream_send` (async); the stream hub of every web
process delivers the event (see hub.py).
"""

import json
import re
from collections.abc import Iterable
from typing import Any, Protocol, cast

from django.conf import settings
from django.utils.module_loading import import_string

from kernel.redis import sync_client
from marketdata.hub import ALL_QUOTES_GROUP, Envelope, asend, batch_wire, envelope, layer_group, plain, send
from marketdata.models import Instrument
from marketdata.publisher import candle_cache_key, candle_group, quote_group, ticker_key

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SEND_MANY_BATCH = 500  # envelopes per layer message of stream_send_many: a bounded decode for a hub


class StreamChannel(Protocol):
    def group(self, user: Any, arg: str) -> str | None:
        """The group carrying this channel for this user, or None if the user may not subscribe
        (unknown, or not theirs). Sync: called through sync_to_async."""

    def snapshot(self, user: Any, arg: str) -> Any:
        """JSON-serialisable state sent right after subscribing. A channel whose updates carry a
        per-key seq may also define `floors(snapshot) -> {key: seq}` (see QuotesChannel)."""


def channel_handler(kind: str) -> StreamChannel | None:
    path = settings.STREAM_CHANNELS.get(kind)
    return import_string(path)() if path else None


def stream_send(group: str, channel: str, event: str, data: Any) -> None:
    """Publish `data` as a frame {"type": event, "channel": channel, "data": data} to a group.
    Never conflated or dropped; Decimal and datetime values are encoded as strings. Callable from
    any thread, with or without a running event loop; returns once the channel layer has it."""
    send(envelope([(group, channel)], event, plain(data)))


def stream_send_many(events: Iterable[tuple[str, str, str, Any]]) -> None:
    """`stream_send` of many (group, channel, event, data) at once: the events of each layer group as
    stream.batch messages of at most SEND_MANY_BATCH envelopes, in order, published as the channel
    layer publishes them (hub.batch_wire), all in one Redis round trip. One `stream_send` each cost
    a round trip and a turn of the sender's event loop: about 0.7 ms an event, a second and a half
    for the 2,000 alerts of a busy bar close."""
    by_group: dict[str, list[Envelope]] = {}
    for group, channel, event, data in events:
        by_group.setdefault(layer_group(group), []).append(envelope([(group, channel)], event, plain(data)))
    if not by_group:
        return
    with sync_client().pipeline(transaction=False) as pipe:
        for group, envelopes in by_group.items():
            for start in range(0, len(envelopes), SEND_MANY_BATCH):
                pipe.publish(*batch_wire(group, envelopes[start : start + SEND_MANY_BATCH]))
        pipe.execute()


async def astream_send(group: str, channel: str, event: str, data: Any) -> None:
    await asend(envelope([(group, channel)], event, plain(data)))


class QuotesChannel:
    """quotes:SYMBOL or quotes:*; snapshot from the Redis ticker cache."""

    def group(self, user: Any, arg: str) -> str | None:
        if arg == "*":
            return ALL_QUOTES_GROUP
        if SYMBOL_RE.match(arg) and Instrument.objects.filter(symbol=arg).exists():
            return quote_group(arg)
        return None

    def snapshot(self, user: Any, arg: str) -> Any:
        symbols = (
            list(Instrument.objects.order_by("symbol").values_list("symbol", flat=True))
            if arg == "*"
            else [arg]
        )
        raw = cast(list[bytes | None], sync_client().mget([ticker_key(s) for s in symbols]))
        return [json.loads(r) for r in raw if r]

    def floors(self, snapshot: list[dict[str, Any]]) -> dict[str, int]:
        """Per symbol, the seq the snapshot carries: queued updates it already covers are dropped."""
        return {quote["symbol"]: quote["seq"] for quote in snapshot}


CANDLE_TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")


class CandlesChannel:
    """candles:SYMBOL:TF; snapshot = the latest closed bars in the Redis candle cache, oldest first."""

    def group(self, user: Any, arg: str) -> str | None:
        symbol, _, timeframe = arg.partition(":")
        if timeframe not in CANDLE_TIMEFRAMES or not SYMBOL_RE.match(symbol):
            return None
        if not Instrument.objects.filter(symbol=symbol).exists():
            return None
        return candle_group(symbol, timeframe)

    def snapshot(self, user: Any, arg: str) -> Any:
        symbol, _, timeframe = arg.partition(":")
        latest = settings.STREAM_CANDLE_SNAPSHOT_BARS
        members = cast(list[bytes], sync_client().zrange(candle_cache_key(symbol, timeframe), -latest, -1))
        return [json.loads(m) for m in members]
