"""Binance spot fakes (shared/PROTOCOLS.md section 2). The market-stream fake on a real WebSocket:
raw `/ws/<name>`, combined `/stream?streams=a/b` (payloads wrapped as {stream, data}) and bare
`/stream` with SUBSCRIBE/UNSUBSCRIBE; ping frames every `ping_interval_s`, dropping clients that do
not pong; connections cut after `max_lifetime_s` (24 h on Binance); `<symbol>@bookTicker` and
`<symbol>@trade`. The REST fake serves GET /api/v3/exchangeInfo and GET /api/v3/klines, the klines
folded from the trades the stream fake put on their shared `Tape`.

Klines for buckets in which nothing traded are left out here; whether Binance sends them (flat,
zero volume) is not settled by its documentation."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .http import HttpFake, Request, Response
from .tape import Tape

INTERVAL_S = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
}
MAX_KLINES = 1000


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    combined: bool
    streams: set[str] = field(default_factory=set)
    opened: float = field(default_factory=time.monotonic)


class BinanceWsFake:
    def __init__(
        self,
        *,
        ping_interval_s: float = 20.0,
        pong_timeout_s: float = 60.0,
        max_lifetime_s: float = 24 * 3600,
        tape: Tape | None = None,
    ) -> None:
        self.tape = tape or Tape()
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.connections: list[_Connection] = []
        self.paths: list[str] = []
        self.connects = 0
        self.lifetime_closes = 0
        self.silent = False
        self._update_id = 400900217
        self._server: Server | None = None
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> "BinanceWsFake":
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            ping_interval=self.ping_interval_s,
            ping_timeout=self.pong_timeout_s,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{next(iter(self._server.sockets)).getsockname()[1]}"

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        parts = urlsplit(ws.request.path)
        if parts.path.startswith("/ws/"):
            conn = _Connection(ws, combined=False, streams={parts.path.removeprefix("/ws/")})
        elif parts.path == "/stream":
            names = parse_qs(parts.query).get("streams", [""])[0]
            conn = _Connection(ws, combined=True, streams={n for n in names.split("/") if n})
        else:
            await ws.close(1008, "unknown path")
            return
        self.connections.append(conn)
        self.connects += 1
        await self._notify()
        try:
            async with asyncio.timeout(self.max_lifetime_s):
                async for raw in ws:
                    await self._control(conn, raw)
        except TimeoutError:
            self.lifetime_closes += 1
            await ws.close(1000, "connection lifetime exceeded")
        except ConnectionClosed:
            pass
        finally:
            self.connections.remove(conn)
            await self._notify()

    async def _control(self, conn: _Connection, raw: str | bytes) -> None:
        try:
            request = json.loads(raw)
            method, request_id = request["method"], request.get("id")
        except (ValueError, KeyError, TypeError):
            await conn.ws.send(
                json.dumps({"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"})
            )
            return
        params = request.get("params") or []
        if method == "SUBSCRIBE":
            conn.streams.update(params)
            reply: dict[str, Any] = {"result": None, "id": request_id}
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            reply = {"result": None, "id": request_id}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(conn.streams), "id": request_id}
        else:
            reply = {"code": 2, "msg": f"Invalid request: unknown method {method}", "id": request_id}
        await conn.ws.send(json.dumps(reply))
        await self._notify()

    def subscribed(self, stream: str) -> int:
        return sum(1 for c in self.connections if stream in c.streams)

    async def book_ticker(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str) -> int:
        self._update_id += 1
        data = {"u": self._update_id, "s": symbol.upper(), "b": bid, "B": bid_qty, "a": ask, "A": ask_qty}
        return await self._publish(f"{symbol.lower()}@bookTicker", data)

    async def trade(self, symbol: str, price: str, qty: str, *, buyer_maker: bool, ts_ns: int) -> int:
        """Put a print on the tape and send it on `<symbol>@trade`."""
        trade = self.tape.record(symbol.upper(), price, qty, "SELL" if buyer_maker else "BUY", ts_ns)
        data = {
            "e": "trade",
            "E": int(time.time() * 1000),
            "s": symbol.upper(),
            "t": trade.trade_id,
            "p": price,
            "q": qty,
            "T": ts_ns // 1_000_000,
            "m": buyer_maker,
            "M": True,
        }
        return await self._publish(f"{symbol.lower()}@trade", data)

    async def server_shutdown(self) -> None:
        data = {"e": "serverShutdown", "E": int(time.time() * 1000)}
        for conn in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                payload = {"stream": "!serverShutdown", "data": data} if conn.combined else data
                await conn.ws.send(json.dumps(payload))

    async def _publish(self, stream: str, data: dict[str, Any]) -> int:
        sent = 0
        for conn in list(self.connections):
            if stream in conn.streams and not self.silent:
                with contextlib.suppress(ConnectionClosed):
                    await conn.ws.send(
                        json.dumps({"stream": stream, "data": data} if conn.combined else data)
                    )
                    sent += 1
        return sent

    async def send_raw(self, text: str) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(text)

    def drop(self) -> None:
        for conn in list(self.connections):
            conn.ws.transport.abort()

    def freeze(self) -> None:
        """Stop reading every connection, pings included, without closing it: a peer that died
        behind a firewall that keeps the TCP session open."""
        self.silent = True
        for conn in list(self.connections):
            conn.ws.transport.pause_reading()


def binance_symbol(
    symbol: str,
    base: str,
    quote: str,
    *,
    tick_size: str = "0.01000000",
    step_size: str = "0.00001000",
    min_qty: str = "0.00001000",
    max_qty: str = "9000.00000000",
    status: str = "TRADING",
) -> dict[str, Any]:
    """A symbol as exchangeInfo lists it (rest-api.md "Exchange information", filters.md)."""
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": False,
        "pegInstructionsAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick_size,
                "maxPrice": "1000000.00000000",
                "tickSize": tick_size,
            },
            {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step_size},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def fake_kline(symbol: str, start: int, step: int) -> list[object]:
    """A deterministic kline for a bucket before the tape, so tests can predict every value."""
    base = Decimal(30000 + (start // step) % 89)
    volume = Decimal(f"{(start // step) % 11}.25")
    return [
        start * 1000,
        f"{base:.8f}",
        f"{base + 3:.8f}",
        f"{base - 2:.8f}",
        f"{base + 1:.8f}",
        f"{volume:.8f}",
        (start + step) * 1000 - 1,
        f"{volume * base:.8f}",
        7,
        f"{volume / 2:.8f}",
        f"{volume * base / 2:.8f}",
        "0",
    ]


class BinanceRestFake(HttpFake):
    """GET /api/v3/exchangeInfo with `symbol` or `symbols` (a JSON array): an unknown one is the
    documented 400 {"code": -1121, "msg": "Invalid symbol."}. GET /api/v3/klines (public): klines with
    open time in [startTime, endTime], oldest first, at most `limit` (default 500, max 1000), the one
    in progress included; 400 `{code, msg}` errors."""

    def __init__(self, *, tape: Tape | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.symbols: list[dict[str, Any]] = []
        self.tape = tape
        self.clock = clock

    def handle(self, request: Request) -> Response:
        if request.path == "/api/v3/exchangeInfo":
            return self._exchange_info(request)
        if request.path == "/api/v3/klines":
            return self._klines(request)
        return Response(404, {"code": -1000, "msg": "Not found."})

    def _exchange_info(self, request: Request) -> Response:
        wanted: list[str] | None = None
        if one := request.arg("symbol"):
            wanted = [one]
        elif many := request.arg("symbols"):
            try:
                wanted = [str(s) for s in json.loads(many)]
            except ValueError:
                return Response(
                    400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}
                )
        symbols = self.symbols
        if wanted is not None:
            known = {s["symbol"] for s in symbols}
            if any(w not in known for w in wanted):
                return Response(400, {"code": -1121, "msg": "Invalid symbol."})
            symbols = [s for s in symbols if s["symbol"] in wanted]
        return Response(
            200,
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            },
            headers={"X-MBX-USED-WEIGHT-1M": "20"},
        )

    def _klines(self, request: Request) -> Response:
        symbol, interval = request.arg("symbol") or "", request.arg("interval") or ""
        if not symbol or symbol != symbol.upper():
            return Response(400, {"code": -1121, "msg": "Invalid symbol."})
        if interval not in INTERVAL_S:
            return Response(400, {"code": -1120, "msg": "Invalid interval."})
        try:
            limit = int(request.arg("limit") or 500)
            start_ms = int(request.arg("startTime") or 0)
            end_ms = int(request.arg("endTime") or self.clock() * 1000)
        except ValueError:
            return Response(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        if not 1 <= limit <= MAX_KLINES:
            return Response(400, {"code": -1130, "msg": "Invalid data sent for a parameter."})
        step = INTERVAL_S[interval]
        now = int(self.clock())
        if request.arg("startTime") is None:  # the most recent `limit` klines up to endTime
            start_ms = (min(end_ms // 1000, now) // step - limit + 1) * step * 1000
        bucket = -(-start_ms // (step * 1000)) * step
        rows: list[list[object]] = []
        while len(rows) < limit and bucket * 1000 <= end_ms and bucket <= now:
            row = self._kline(symbol, bucket, step)
            if row is not None:
                rows.append(row)
            bucket += step
        return Response(200, rows)

    def _kline(self, symbol: str, start: int, step: int) -> list[object] | None:
        if self.tape is None or start < self.tape.since:
            return fake_kline(symbol, start, step)
        bar = self.tape.bucket(symbol, start, step)
        if bar is None:
            return None
        return [
            start * 1000,
            str(bar.open),
            str(bar.high),
            str(bar.low),
            str(bar.close),
            str(bar.volume),
            (start + step) * 1000 - 1,
            str(bar.quote_volume),
            bar.count,
            str(bar.taker_buy_volume),
            str(bar.taker_buy_quote_volume),
            "0",
        ]
