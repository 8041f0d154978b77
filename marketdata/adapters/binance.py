"""Binance spot `<symbol>@bookTicker` over one combined stream (shared/PROTOCOLS.md section 2).

Public data, no credentials. Venue symbols are Binance's (`btcusdt`, any case). Binance cuts every
connection after 24 h, so the adapter reconnects on its own a little before (`max_connection_s`).
The websockets library answers the server's pings with pongs echoing their payload.
"""

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import websockets

from marketdata.quotes import Quote, now_ns

from .base import Adapter, MalformedMessage, QuoteSink, VenueConfig
from .rest import RestClient
from .streaming import price, watched

log = logging.getLogger(__name__)

WS_URL = "wss://stream.binance.com:9443"
REST_URL = "https://api.binance.com"
MAX_CONNECTION_S = 23 * 3600 + 50 * 60
MAX_STREAMS = 1024  # per connection (web-socket-streams.md)


class ServerShutdown(Exception):
    """Binance announced it will close this connection: reconnect now."""


class BinanceAdapter(Adapter):
    kind = "binance"

    def __init__(self, venue: VenueConfig, sink: QuoteSink, **kwargs: Any) -> None:
        super().__init__(venue, sink, **kwargs)
        self.by_name = {name.lower(): symbol for name, symbol in venue.symbols.items()}
        self.max_connection_s = float(venue.config.get("max_connection_s", MAX_CONNECTION_S))
        base = str(venue.config.get("ws_url", WS_URL)).rstrip("/")
        streams = "/".join(f"{name}@bookTicker" for name in sorted(self.by_name))
        self.url = f"{base}/stream?streams={streams}"

    async def session(self) -> None:
        async with websockets.connect(self.url, max_size=2**20, open_timeout=10) as ws:
            self.connected()
            try:
                async with asyncio.timeout(self.max_connection_s):
                    async for raw in watched(self, ws):
                        try:
                            self.handle(raw)
                        except (MalformedMessage, ValueError, KeyError, TypeError, AttributeError) as exc:
                            self.malformed(raw, exc)
            except TimeoutError:
                log.info(
                    "venue=%s reconnecting before Binance's 24 h cut (%.0f s)",
                    self.venue.code,
                    self.max_connection_s,
                )
            except ServerShutdown:
                log.info("venue=%s server shutdown announced, reconnecting", self.venue.code)

    def handle(self, raw: str | bytes) -> None:
        message = json.loads(raw)
        if not isinstance(message, dict):
            raise MalformedMessage("a frame must be a JSON object")
        if "stream" not in message:
            if "result" in message or "code" in message:
                log.info("venue=%s control reply: %.200s", self.venue.code, raw)
                return
            raise MalformedMessage("not a combined-stream envelope")
        data = message["data"]
        if not isinstance(data, Mapping):
            raise MalformedMessage("`data` must be an object")
        if data.get("e") == "serverShutdown":
            raise ServerShutdown("serverShutdown event")
        if not str(message["stream"]).endswith("@bookTicker"):
            return
        symbol = self.by_name.get(str(data["s"]).lower())
        if symbol is None:
            return
        bid, ask = price(data["b"]), price(data["a"])
        if bid == 0 or ask == 0:
            return
        ts = now_ns()  # bookTicker carries no event time
        self.emit(
            Quote(
                symbol=symbol,
                venue=self.venue.code,
                bid=bid,
                ask=ask,
                venue_ts=ts,
                recv_ts=ts,
                bid_size=price(data["B"]),
                ask_size=price(data["A"]),
            )
        )


class BinanceRest(RestClient):
    """Spot REST, public market data only (no key, no signature)."""

    def __init__(self, *, base_url: str = REST_URL, venue: str = "binance", **kw: Any) -> None:
        super().__init__(venue=venue, base_url=base_url, **kw)

    def exchange_info(self) -> Any:
        """Trading rules and symbols: `{"timezone", "serverTime", "rateLimits", "exchangeFilters",
        "symbols": [...]}` (rest-api.md "Exchange information")."""
        return self.get("/api/v3/exchangeInfo")
