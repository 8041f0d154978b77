"""Quotes from a FIX 4.4 LP. The FIX session itself lives in the `runfix` process (the optional `fix`
app, QuickFIX); it publishes each venue's top of book on a Redis pub/sub channel and this adapter
turns those into Quotes, so a FIX venue gets the LP manager's staleness, failover and health like
any other. This module imports neither the fix app nor quickfix.

Wire format (one pub/sub message per batch): a JSON array of
`[venue_symbol, bid, ask, bid_size, ask_size, venue_ts_ns]`, prices and sizes as the venue's decimal
strings (sizes may be null). The receive time is taken here, on the market loop's clock, because
staleness is judged on it. An empty array is a liveness beacon: `runfix` sends one a second for each
venue whose FIX session is logged on and has heard from its peer within 2 HeartBtInt + 1 s (QuickFIX's
heartbeats and test requests keep that true while the peer lives), so a quiet book stays healthy and
a dead session goes stale once the beacons stop.
"""

import json
from decimal import Decimal, InvalidOperation

from kernel.redis import async_client, key
from marketdata.quotes import Quote, now_ns

from .base import Adapter, MalformedMessage

QuoteRow = tuple[str, str, str, str | None, str | None, int]


def fixmd_channel(venue_code: str) -> str:
    return key("fixmd", venue_code)


def encode_rows(rows: list[QuoteRow]) -> str:
    return json.dumps(rows, separators=(",", ":"))


class FixAdapter(Adapter):
    kind = "fix"
    min_stale_after_ms = 3000  # a beacon every second

    async def session(self) -> None:
        pubsub = async_client().pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(fixmd_channel(self.venue.code))
        try:
            self.connected()
            while True:
                message = await pubsub.get_message(timeout=self.silence_timeout_s)
                if message is not None:
                    self.message_received()
                    self.on_batch(message["data"])
        finally:
            await pubsub.aclose()

    def on_batch(self, data: bytes | str) -> None:
        try:
            rows = json.loads(data)
            if not isinstance(rows, list):
                raise MalformedMessage("not a list")
        except (ValueError, MalformedMessage) as exc:
            self.malformed(data, exc)
            return
        symbols = self.venue.symbols
        recv_ts = now_ns()
        for row in rows:
            try:
                vsym, bid, ask, bid_size, ask_size, venue_ts = row
                symbol = symbols.get(vsym)
                if symbol is None:
                    continue
                quote = Quote(
                    symbol=symbol,
                    venue=self.venue.code,
                    bid=Decimal(bid),
                    ask=Decimal(ask),
                    venue_ts=int(venue_ts),
                    recv_ts=recv_ts,
                    bid_size=Decimal(bid_size) if bid_size is not None else None,
                    ask_size=Decimal(ask_size) if ask_size is not None else None,
                )
            except (ValueError, TypeError, InvalidOperation) as exc:
                self.malformed(row, exc)
                continue
            self.emit(quote)
