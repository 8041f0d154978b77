"""Binance spot fakes (shared/PROTOCOLS.md section 2). The market-stream fake on a real WebSocket: raw
`/ws/<name>`, combined `/stream?streams=a/b` (payloads wrapped as {stream, data}) and bare `/stream`
with SUBSCRIBE/UNSUBSCRIBE; ping frames every `ping_interval_s`, dropping clients that do not pong;
connections cut after `max_lifetime_s` (24 h on Binance). The REST fake serves exchangeInfo."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .http import HttpFake, Request, Response


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
    ) -> None:
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


class BinanceRestFake(HttpFake):
    """GET /api/v3/exchangeInfo with `symbol` or `symbols` (a JSON array): an unknown one is the
    documented 400 {"code": -1121, "msg": "Invalid symbol."}."""

    def __init__(self) -> None:
        super().__init__()
        self.symbols: list[dict[str, Any]] = []

    def handle(self, request: Request) -> Response:
        if request.path != "/api/v3/exchangeInfo":
            return Response(404, {"code": -1000, "msg": "Not found."})
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
