"""Binance spot `<symbol>@bookTicker` (and, for a caller with a trade sink, `<symbol>@trade`) over
one combined stream (shared/PROTOCOLS.md section 2).

Public data, no credentials. Venue symbols are Binance's (`btcusdt`, any case). Binance cuts every
connection after 24 h, so the adapter reconnects on its own a little before (`max_connection_s`).
The websockets library answers the server's pings with pongs echoing their payload.

`bookTicker` sends nothing while a book is quiet, so data frames cannot tell a quiet book from a dead
connection. The adapter pings the server every `ping_interval_s` (Binance allows 5 incoming messages
a second per connection, pings included): each pong is a sign of life for the LP manager, and a pong
missing for `pong_timeout_s` drops the connection. That, not data silence, is this venue's watchdog.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import websockets

from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.quotes import Quote, Trade, now_ns

from .base import Adapter, MalformedMessage, QuoteSink, VenueConfig
from .rest import RestClient
from .streaming import price, watched

log = logging.getLogger(__name__)

WS_URL = "wss://stream.binance.com:9443"
REST_URL = "https://api.binance.com"
KLINES_PER_REQUEST = 1000  # the documented maximum of GET /api/v3/klines
MAX_CONNECTION_S = 23 * 3600 + 50 * 60
MAX_STREAMS = 1024  # per connection (web-socket-streams.md)
STREAMS_PER_SYMBOL = 2  # <symbol>@bookTicker and <symbol>@trade
MAX_SYMBOLS = MAX_STREAMS // STREAMS_PER_SYMBOL


class ServerShutdown(Exception):
    """Binance announced it will close this connection: reconnect now."""


class PongTimeout(Exception):
    """The server did not answer our ping in time: the connection is dead."""


class BinanceAdapter(Adapter):
    kind = "binance"
    # Binance: 300 connections per 5 minutes per IP, and repeat offenders are banned. A venue keeps
    # to a third of that, leaving room for other venues and processes on the same address.
    connect_limit = (100, 300.0)
    min_stale_after_ms = 3000  # a pong every second
    has_trades = True

    def __init__(self, venue: VenueConfig, sink: QuoteSink, **kwargs: Any) -> None:
        super().__init__(venue, sink, **kwargs)
        self.by_name = {name.lower(): symbol for name, symbol in venue.symbols.items()}
        self.max_connection_s = float(venue.config.get("max_connection_s", MAX_CONNECTION_S))
        self.ping_interval_s = float(venue.config.get("ping_interval_s", 1.0))
        self.pong_timeout_s = float(venue.config.get("pong_timeout_s", 5.0))
        base = str(venue.config.get("ws_url", WS_URL)).rstrip("/")
        kinds = ["bookTicker", *(["trade"] if self.trade_sink is not None else [])]
        streams = "/".join(f"{name}@{kind}" for name in sorted(self.by_name) for kind in kinds)
        self.url = f"{base}/stream?streams={streams}"

    @property
    def silence_timeout_s(self) -> float:
        # Quiet books send nothing: silence is judged by the pongs (see the module docstring).
        return float(self.venue.config.get("silence_timeout_s", self.max_connection_s))

    async def session(self) -> None:
        async with websockets.connect(self.url, max_size=2**20, open_timeout=10) as ws:
            self.connected()
            keepalive = asyncio.create_task(self._keepalive(ws), name=f"pings-{self.venue.code}")
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
            finally:
                keepalive.cancel()
                # A PongTimeout raised here replaces the closed-connection error it caused.
                with contextlib.suppress(asyncio.CancelledError):
                    await keepalive

    async def _keepalive(self, ws: Any) -> None:
        """Ping every `ping_interval_s`; a pong is a sign of life, a missing one ends the connection."""
        while True:
            await asyncio.sleep(self.ping_interval_s)
            try:
                pong = await ws.ping()
            except websockets.ConnectionClosed:
                return  # the reader sees the close too and ends the session
            try:
                async with asyncio.timeout(self.pong_timeout_s):
                    await pong
            except TimeoutError:
                # The reader is blocked on a socket that will never speak again: abort it.
                ws.transport.abort()
                raise PongTimeout(f"no pong within {self.pong_timeout_s:g} s") from None
            self.message_received()

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
        stream = str(message["stream"])
        symbol = self.by_name.get(str(data["s"]).lower()) if "s" in data else None
        if symbol is None:
            return
        if stream.endswith("@trade"):
            if self.trade_sink is not None:
                self._trade(data, symbol)
            return
        if not stream.endswith("@bookTicker"):
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

    def _trade(self, data: Mapping[str, Any], symbol: str) -> None:
        """`<symbol>@trade`: t = trade id, p/q = price/quantity, T = trade time (ms), m = the buyer
        is the maker (so the taker sold)."""
        size = price(data["q"])
        if size == 0:
            raise MalformedMessage(f"trade {data.get('t')!r} of quantity 0")
        trade_ms = data["T"]
        if not isinstance(trade_ms, int) or isinstance(trade_ms, bool):
            raise MalformedMessage(f"trade time must be an integer, got {trade_ms!r}")
        self.emit_trade(
            Trade(
                symbol=symbol,
                venue=self.venue.code,
                price=price(data["p"]),
                size=size,
                side="SELL" if data["m"] is True else "BUY",
                trade_id=str(data["t"]),
                venue_ts=trade_ms * 1_000_000,
                recv_ts=now_ns(),
            )
        )


def kline_bar(row: object, *, symbol: str, timeframe: str) -> Bar:
    """A kline `[open time ms, open, high, low, close, volume, close time ms, quote volume, trades,
    taker buy base, taker buy quote, ignore]` (prices and volumes strings) as our Bar."""
    if not isinstance(row, list) or len(row) < 9:
        raise MalformedMessage(f"not a kline: {row!r:.200}")
    open_ms, trades = row[0], row[8]
    if not isinstance(open_ms, int) or not isinstance(trades, int) or open_ms % 1000:
        raise MalformedMessage(f"bad kline open time or trade count: {row!r:.200}")
    return Bar(
        symbol=symbol,
        timeframe=timeframe,
        start=open_ms // 1000,
        open=price(row[1]),
        high=price(row[2]),
        low=price(row[3]),
        close=price(row[4]),
        volume=price(row[5]),
        tick_count=trades,
    )


class BinanceRest(RestClient):
    """Binance spot public market data (no key, no signature): exchangeInfo and klines."""

    def __init__(self, *, base_url: str = REST_URL, venue: str = "binance", **kw: Any) -> None:
        super().__init__(venue=venue, base_url=base_url, **kw)

    def exchange_info(self) -> Any:
        """Trading rules and symbols: `{"timezone", "serverTime", "rateLimits", "exchangeFilters",
        "symbols": [...]}` (rest-api.md "Exchange information")."""
        return self.get("/api/v3/exchangeInfo")

    def klines(
        self,
        *,
        name: str,
        symbol: str,
        timeframe: str,
        start: int,
        end: int,
        on_page: Callable[[int], None] | None = None,
    ) -> list[Bar]:
        """Closed bars whose start is in [start, end) (UNIX seconds), oldest first, paged by open
        time. Binance's interval names are ours (1m 5m 15m 1h 4h 1d) and its bars are UTC-aligned."""
        step = TIMEFRAME_SECONDS[timeframe]
        closed_before = int(time.time()) - step  # Binance also returns the kline in progress
        bars: dict[int, Bar] = {}
        cursor = start - start % step
        while cursor < end:
            page = self.get(
                "/api/v3/klines",
                {
                    "symbol": name.upper(),
                    "interval": timeframe,
                    "startTime": cursor * 1000,
                    "endTime": end * 1000 - 1,
                    "limit": KLINES_PER_REQUEST,
                },
            )
            if not isinstance(page, list):
                raise MalformedMessage("klines must be a JSON array")
            if on_page is not None:
                on_page(len(page))
            for row in page:
                bar = kline_bar(row, symbol=symbol, timeframe=timeframe)
                if start <= bar.start < end and bar.start <= closed_before:
                    bars[bar.start] = bar
            if len(page) < KLINES_PER_REQUEST:
                break
            cursor = kline_bar(page[-1], symbol=symbol, timeframe=timeframe).start + step
        return [bars[k] for k in sorted(bars)]
