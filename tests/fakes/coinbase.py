"""Coinbase Advanced Trade fakes speaking the documented formats (shared/PROTOCOLS.md section 1)
over real sockets: a WebSocket market-data server and a REST server, both verifying the ES256 JWT
against a key generated at test time (the public `/market/...` REST endpoints take none).

Given one `Tape`, the WebSocket fake records every trade it streams on `market_trades` and the REST
fake folds its candles from those trades, so the two tell the same story.

Plain HTTP/WS on 127.0.0.1: our clients take their endpoints from the venue config, so the fakes
need no TLS."""

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import uuid4

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from marketdata.adapters.streaming import ns_to_rfc3339, rfc3339_ns

from .http import HttpFake, Request, Response
from .tape import Tape, TapeTrade

PREFIX = "/api/v3/brokerage"
GRANULARITY_S = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "FOUR_HOUR": 14400,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
MAX_CANDLES = 350
# List Orders' order_status enum (docs .../rest-api/orders/list-orders).
ORDER_STATUSES = {
    "PENDING",
    "OPEN",
    "FILLED",
    "CANCELLED",
    "EXPIRED",
    "FAILED",
    "UNKNOWN_ORDER_STATUS",
    "QUEUED",
    "CANCEL_QUEUED",
    "EDIT_QUEUED",
}


@dataclass(frozen=True)
class CoinbaseKey:
    """A CDP API key made for one test: its name and SEC1 PEM as a user would paste them."""

    name: str
    private_pem: str
    public_key: ec.EllipticCurvePublicKey

    @classmethod
    def generate(cls) -> "CoinbaseKey":
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        return cls(f"organizations/{uuid4()}/apiKeys/{uuid4()}", pem, key.public_key())

    @property
    def credentials(self) -> dict[str, str]:
        return {"api_key_name": self.name, "private_key_pem": self.private_pem}


class JwtRejected(Exception):
    pass


def verify_jwt(token: str, key: CoinbaseKey, *, uri: str | None) -> dict[str, Any]:
    """Check a Coinbase JWT as the venue does: ES256 by this key, header kid/nonce, claims
    sub/iss/nbf/exp (at most 120 s of life), and `uri` for REST (absent on WebSocket)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=["ES256"],
            issuer="cdp",
            options={"require": ["sub", "iss", "nbf", "exp"]},
        )
    except jwt.InvalidTokenError as exc:
        raise JwtRejected(str(exc)) from exc
    if header.get("kid") != key.name or header.get("typ") != "JWT":
        raise JwtRejected(f"bad header {header}")
    if not re.fullmatch(r"[0-9a-f]{64}", str(header.get("nonce", ""))):
        raise JwtRejected("nonce must be 64 hex characters")
    if claims["sub"] != key.name:
        raise JwtRejected("sub is not the key name")
    if claims["exp"] - claims["nbf"] > 120:
        raise JwtRejected("a JWT may live at most 120 s")
    if claims.get("uri") != uri:
        raise JwtRejected(f"uri claim {claims.get('uri')!r} does not match {uri!r}")
    return claims


def error(status: int, name: str, code: int, message: str) -> Response:
    return Response(status, {"error": name, "code": code, "message": message, "details": []})


def fake_candle(product_id: str, start: int, step: int) -> dict[str, str]:
    """A deterministic candle for any bucket, so tests can predict every value."""
    base = Decimal(1000 + (start // step) % 97)
    return {
        "start": str(start),
        "low": str(base - 1),
        "high": str(base + 2),
        "open": str(base),
        "close": str(base + 1),
        "volume": f"{(start // step) % 13}.5",
    }


def coinbase_product(
    product_id: str,
    *,
    base_name: str,
    quote_name: str,
    quote_increment: str = "0.01",
    base_increment: str = "0.00000001",
    base_min_size: str = "0.00000001",
    base_max_size: str = "3400",
    price_increment: str | None = None,
    status: str = "online",
    trading_disabled: bool = False,
) -> dict[str, Any]:
    """A SPOT product as `market/products` lists it: every field of the documented example
    (docs .../rest-api/public/list-public-products), numbers as strings."""
    base, quote = product_id.split("-")
    return {
        "product_id": product_id,
        "price": "140.21",
        "price_percentage_change_24h": "9.43%",
        "volume_24h": "1908432",
        "volume_percentage_change_24h": "9.43%",
        "base_increment": base_increment,
        "quote_increment": quote_increment,
        "quote_min_size": "1",
        "quote_max_size": "150000000",
        "base_min_size": base_min_size,
        "base_max_size": base_max_size,
        "base_name": base_name,
        "quote_name": quote_name,
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": status,
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": trading_disabled,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": quote,
        "base_currency_id": base,
        "fcm_trading_session_details": None,
        "mid_market_price": "",
        "alias": "",
        "alias_to": [],
        "base_display_symbol": base,
        "quote_display_symbol": quote,
        "view_only": False,
        "price_increment": price_increment or quote_increment,
        "display_name": f"{base}-{quote}",
        "product_venue": "CBE",
        "approximate_quote_24h_volume": "1908432",
        "new_at": "2021-07-01T00:00:00.000Z",
    }


class CoinbaseRestFake(HttpFake):
    """GET /accounts, /orders/historical/batch, /orders/historical/fills, /best_bid_ask,
    /products/{id}/candles (JWT), and the public /market/products (no key: a JWT, as the SDK sends
    when it has a key, is not checked)."""

    def __init__(
        self,
        key: CoinbaseKey,
        *,
        page_size: int = 2,
        clock: Callable[[], float] = time.time,
        tape: Tape | None = None,
        tls: bool = False,
    ) -> None:
        super().__init__(tls=tls)
        self.key = key
        self.tape = tape
        self.page_size = page_size
        self.clock = clock
        self.accounts: list[dict[str, Any]] = []
        self.orders: list[dict[str, Any]] = []
        self.books: dict[str, tuple[str, str]] = {}
        self.fills: list[dict[str, Any]] = []
        self.jwt_claims: list[dict[str, Any]] = []
        self.rejected_jwts: list[str] = []
        self.revoked = False  # every request answers 401, as for a deleted key
        self.products: list[dict[str, Any]] = []

    def handle(self, request: Request) -> Response:
        if request.path == f"{PREFIX}/market/products":
            return self._public_products(request)
        path = request.path.removeprefix(PREFIX)
        if match := re.fullmatch(r"/market/products/([A-Z0-9-]+)/candles", path):
            return self._candles(request, match.group(1))  # public: no key
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        try:
            claims = verify_jwt(token, self.key, uri=f"{request.method} {self.host}{request.path}")
        except JwtRejected as exc:
            self.rejected_jwts.append(str(exc))
            return error(401, "UNAUTHENTICATED", 16, "Unauthorized")
        if self.revoked:
            return error(401, "UNAUTHENTICATED", 16, "Unauthorized")
        self.jwt_claims.append(claims)
        if path == "/accounts":
            return self._page(request, self.accounts, "accounts")
        if path == "/orders/historical/batch":
            if bad := set(request.query.get("order_status") or []) - ORDER_STATUSES:
                return error(400, "INVALID_ARGUMENT", 3, f"invalid order_status {sorted(bad)}")
            return self._page(request, self._orders(request), "orders", sequence="0")
        if path == "/orders/historical/fills":
            return self._fills(request)
        if path == "/best_bid_ask":
            return self._best_bid_ask(request)
        if match := re.fullmatch(r"/products/([A-Z0-9-]+)/candles", path):
            return self._candles(request, match.group(1))
        return error(404, "NOT_FOUND", 5, "Not Found")

    def _public_products(self, request: Request) -> Response:
        products = self.products
        if kind := request.arg("product_type"):
            products = [p for p in products if p["product_type"] == kind.upper()]
        if ids := request.query.get("product_ids"):
            products = [p for p in products if p["product_id"] in ids]
        offset = int(request.arg("offset") or 0)
        limit = int(request.arg("limit") or len(products) or 1)
        page = products[offset : offset + limit]
        return Response(200, {"products": page, "num_products": len(page)})

    def _page(self, request: Request, items: list[dict[str, Any]], name: str, **extra: str) -> Response:
        offset = int(request.arg("cursor") or 0)
        size = min(int(request.arg("limit") or self.page_size), self.page_size)
        page = items[offset : offset + size]
        has_next = offset + size < len(items)
        body = {name: page, "has_next": has_next, "cursor": str(offset + size) if has_next else "", **extra}
        if name == "accounts":
            body["size"] = len(page)
        return Response(200, body)

    def _orders(self, request: Request) -> list[dict[str, Any]]:
        orders = self.orders
        if statuses := request.query.get("order_status"):
            orders = [o for o in orders if o["status"] in statuses]
        if ids := request.query.get("order_ids"):
            orders = [o for o in orders if o["order_id"] in ids]
        if start := request.arg("start_date"):
            orders = [o for o in orders if o["created_time"] >= start]
        return sorted(orders, key=lambda o: o["created_time"], reverse=True)

    def _fills(self, request: Request) -> Response:
        """List Fills: filters order_ids/trade_ids/product_ids (repeated keys) and
        start/end_sequence_timestamp (RFC3339, start inclusive, end exclusive); newest first; the
        answer is `{"fills", "cursor"}` with no has_next, the cursor empty on the last page."""
        fills = self.fills
        for name, key in (
            ("order_ids", "order_id"),
            ("trade_ids", "trade_id"),
            ("product_ids", "product_id"),
        ):
            if wanted := request.query.get(name):
                fills = [f for f in fills if f[key] in wanted]
        try:
            start = request.arg("start_sequence_timestamp")
            end = request.arg("end_sequence_timestamp")
            start_ns, end_ns = (rfc3339_ns(start) if start else None), (rfc3339_ns(end) if end else None)
        except ValueError:
            return error(400, "INVALID_ARGUMENT", 3, "invalid sequence timestamp")
        fills = [
            f
            for f in fills
            if (start_ns is None or rfc3339_ns(f["sequence_timestamp"]) >= start_ns)
            and (end_ns is None or rfc3339_ns(f["sequence_timestamp"]) < end_ns)
        ]
        fills = sorted(fills, key=lambda f: rfc3339_ns(f["sequence_timestamp"]), reverse=True)
        offset = int(request.arg("cursor") or 0)
        size = min(int(request.arg("limit") or self.page_size), self.page_size)
        more = offset + size < len(fills)
        return Response(
            200, {"fills": fills[offset : offset + size], "cursor": str(offset + size) if more else ""}
        )

    def _best_bid_ask(self, request: Request) -> Response:
        ids = request.query.get("product_ids") or sorted(self.books)
        now = ns_to_rfc3339(int(self.clock() * 1e9))
        books = [
            {
                "product_id": pid,
                "bids": [{"price": self.books[pid][0], "size": "1.5"}],
                "asks": [{"price": self.books[pid][1], "size": "2"}],
                "time": now,
            }
            for pid in ids
            if pid in self.books
        ]
        return Response(200, {"pricebooks": books})

    def _candles(self, request: Request, product_id: str) -> Response:
        try:
            start, end = int(request.arg("start") or ""), int(request.arg("end") or "")
            step = GRANULARITY_S[request.arg("granularity") or ""]
            limit = int(request.arg("limit") or MAX_CANDLES)
        except (KeyError, ValueError):
            return error(400, "INVALID_ARGUMENT", 3, "start, end and granularity are required")
        first = -(-start // step) * step
        buckets = list(range(first, end + 1, step))
        if len(buckets) > min(limit, MAX_CANDLES):
            return error(
                400,
                "INVALID_ARGUMENT",
                3,
                f"start and end argument is invalid - number of candles requested should be less than "
                f"{MAX_CANDLES}",
            )
        now = int(self.clock())
        candles = [c for b in reversed(buckets) if b <= now and (c := self._candle(product_id, b, step))]
        return Response(200, {"candles": candles})

    def _candle(self, product_id: str, start: int, step: int) -> dict[str, str] | None:
        """From the tape once it runs (None for a bucket with no trade: Coinbase sends no candle for
        it), from `fake_candle` before."""
        if self.tape is None or start < self.tape.since:
            return fake_candle(product_id, start, step)
        bar = self.tape.bucket(product_id, start, step)
        if bar is None:
            return None
        return {
            "start": str(start),
            "low": str(bar.low),
            "high": str(bar.high),
            "open": str(bar.open),
            "close": str(bar.close),
            "volume": str(bar.volume),
        }


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    channels: dict[str, set[str]] = field(default_factory=dict)
    seq: int = 0
    snapshots: set[str] = field(default_factory=set)


class CoinbaseWsFake:
    """The market-data WebSocket. Enforces the subscribe deadline; verifies the JWT on every
    subscribe message; sends heartbeats every `heartbeat_interval_s` to `heartbeats` subscribers.

    `level2`: the fake keeps one book per product (`set_book`); subscribing sends each product's
    snapshot on channel `l2_data`, then `l2_update` sends absolute quantities per level ("0" removes
    a level) to the product's subscribers. Every message of a connection carries the next
    `sequence_num`, whatever its channel; `skip_sequence` makes a gap."""

    def __init__(
        self,
        key: CoinbaseKey | None = None,
        *,
        subscribe_deadline_s: float = 5.0,
        heartbeat_interval_s: float = 1.0,
        tape: Tape | None = None,
    ) -> None:
        self.key = key
        self.tape = tape or Tape()
        self.subscribe_deadline_s = subscribe_deadline_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.connections: list[_Connection] = []
        self.connects = 0
        self.deadline_closes = 0
        self.subscribe_messages: list[dict[str, Any]] = []
        self.jwt_claims: list[dict[str, Any]] = []
        self.silent = False
        # product -> side ("bid"/"offer") -> price level -> quantity, as decimal strings
        self.books: dict[str, dict[str, dict[str, str]]] = {}
        self.send_snapshots = True  # False: a level2 subscription gets no snapshot (a broken venue)
        self.withheld_snapshots: set[str] = set()  # products whose snapshot never comes
        self._server: Server | None = None
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> "CoinbaseWsFake":
        self._server = await serve(self._handler, "127.0.0.1", 0)
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

    def subscribed(self, channel: str, product_id: str | None = None) -> int:
        """How many open connections are subscribed to `channel` (for `product_id`)."""
        return sum(
            1
            for c in self.connections
            if channel in c.channels and (product_id is None or product_id in c.channels[channel])
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handler(self, ws: ServerConnection) -> None:
        conn = _Connection(ws)
        self.connections.append(conn)
        self.connects += 1
        await self._notify()
        heartbeats = asyncio.create_task(self._heartbeats(conn))
        try:
            try:
                first = await asyncio.wait_for(ws.recv(), self.subscribe_deadline_s)
            except TimeoutError:
                self.deadline_closes += 1
                await ws.close(1000, "no subscription within the deadline")
                return
            await self._on_message(conn, first)
            async for raw in ws:
                await self._on_message(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            heartbeats.cancel()
            self.connections.remove(conn)
            await self._notify()

    async def _on_message(self, conn: _Connection, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            kind, channel = message["type"], message["channel"]
        except (ValueError, KeyError, TypeError):
            await conn.ws.send(json.dumps({"type": "error", "message": "failure to parse message"}))
            return
        if self.key is not None and "jwt" in message:
            try:
                self.jwt_claims.append(verify_jwt(message["jwt"], self.key, uri=None))
            except JwtRejected as exc:
                await conn.ws.send(json.dumps({"type": "error", "message": f"authentication failure: {exc}"}))
                return
        self.subscribe_messages.append(message)
        products = set(message.get("product_ids") or [])
        if kind == "subscribe":
            conn.channels.setdefault(channel, set()).update(products)
        elif kind == "unsubscribe":
            # Without product ids the whole channel goes (docs: websocket-overview, Unsubscribing).
            remaining = conn.channels.get(channel, set()) - products
            if products and remaining:
                conn.channels[channel] = remaining
            else:
                conn.channels.pop(channel, None)
        await self._send(
            conn, "subscriptions", [{"subscriptions": {c: sorted(p) for c, p in conn.channels.items()}}]
        )
        if kind == "subscribe" and channel == "level2" and self.send_snapshots:
            for product in sorted(products - self.withheld_snapshots):
                await self._send(conn, "l2_data", [self._l2_snapshot(product)])
        if kind == "subscribe" and channel == "market_trades":
            await self._market_trades_snapshot(conn, products)
        await self._notify()

    async def _send(self, conn: _Connection, channel: str, events: list[dict[str, Any]]) -> None:
        conn.seq += 1
        envelope = {
            "channel": channel,
            "client_id": "",
            "timestamp": ns_to_rfc3339(time.time_ns()),
            "sequence_num": conn.seq - 1,
            "events": events,
        }
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(json.dumps(envelope))

    async def _heartbeats(self, conn: _Connection) -> None:
        counter = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if "heartbeats" in conn.channels and not self.silent:
                counter += 1
                now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
                event = {
                    "current_time": f"{now}.000000000 +0000 UTC m=+{counter}.0",
                    "heartbeat_counter": counter,
                }
                await self._send(conn, "heartbeats", [event])

    async def ticker(
        self, product_id: str, best_bid: str, best_ask: str, *, bid_qty: str = "0.5", ask_qty: str = "0.75"
    ) -> int:
        """Send a ticker update to every subscriber of `product_id`; returns how many got it."""
        ticker = {
            "type": "ticker",
            "product_id": product_id,
            "price": best_ask,
            "volume_24_h": "1234.5",
            "low_24_h": best_bid,
            "high_24_h": best_ask,
            "low_52_w": best_bid,
            "high_52_w": best_ask,
            "price_percent_chg_24_h": "0.5",
            "best_bid": best_bid,
            "best_bid_quantity": bid_qty,
            "best_ask": best_ask,
            "best_ask_quantity": ask_qty,
        }
        return await self._broadcast("ticker", product_id, "tickers", ticker)

    # -- market_trades ------------------------------------------------------------------------
    SNAPSHOT_TRADES = 50

    @staticmethod
    def _trade_wire(trade: TapeTrade) -> dict[str, str]:
        return {
            "trade_id": str(trade.trade_id),
            "product_id": trade.product,
            "price": str(trade.price),
            "size": str(trade.size),
            "side": trade.side,
            "time": ns_to_rfc3339(trade.ts_ns),
        }

    async def _market_trades_snapshot(self, conn: _Connection, products: set[str]) -> None:
        """On subscribe, the recent trades of each product (newest first), as an event of type
        snapshot; so a client that reconnects sees again trades it already has."""
        trades = [t for p in sorted(products) for t in reversed(self.tape.recent(p, self.SNAPSHOT_TRADES))]
        conn.snapshots.add("market_trades")
        await self._send(
            conn, "market_trades", [{"type": "snapshot", "trades": list(map(self._trade_wire, trades))}]
        )

    async def trades(self, product_id: str, prints: list[tuple[str, str, str, int]]) -> int:
        """Put (price, size, side, time ns) prints on the tape and send them to the subscribers of
        `product_id` in one update (Coinbase batches the last 250 ms, newest first)."""
        recorded = [self.tape.record(product_id, p, q, side, ts) for p, q, side, ts in prints]
        wire = [self._trade_wire(t) for t in reversed(recorded)]
        sent = 0
        for conn in list(self.connections):
            if product_id in conn.channels.get("market_trades", set()) and not self.silent:
                kind = "update" if "market_trades" in conn.snapshots else "snapshot"
                conn.snapshots.add("market_trades")
                await self._send(conn, "market_trades", [{"type": kind, "trades": wire}])
                sent += 1
        return sent

    async def candle(self, product_id: str, candle: dict[str, str]) -> int:
        return await self._broadcast("candles", product_id, "candles", {**candle, "product_id": product_id})

    async def _broadcast(self, channel: str, product_id: str, key: str, item: dict[str, Any]) -> int:
        sent = 0
        for conn in list(self.connections):
            if product_id in conn.channels.get(channel, set()) and not self.silent:
                kind = "update" if channel in conn.snapshots else "snapshot"
                conn.snapshots.add(channel)
                await self._send(conn, channel, [{"type": kind, key: [item]}])
                sent += 1
        return sent

    # -- level2 ----------------------------------------------------------------------------------
    def set_book(self, product_id: str, *, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        """The book a level2 subscriber gets as its snapshot (nothing is sent now)."""
        self.books[product_id] = {"bid": dict(bids), "offer": dict(asks)}

    def _l2_snapshot(self, product_id: str) -> dict[str, Any]:
        book = self.books.get(product_id, {"bid": {}, "offer": {}})
        now = ns_to_rfc3339(time.time_ns())
        updates = [
            {"side": side, "event_time": now, "price_level": level, "new_quantity": quantity}
            for side in ("bid", "offer")
            for level, quantity in book[side].items()
        ]
        return {"type": "snapshot", "product_id": product_id, "updates": updates}

    async def l2_update(self, product_id: str, changes: list[tuple[str, str, str]]) -> int:
        """Apply (side, price_level, new_quantity) changes to the book and send them as one update
        event to every level2 subscriber of the product; returns how many got it."""
        book = self.books.setdefault(product_id, {"bid": {}, "offer": {}})
        now = ns_to_rfc3339(time.time_ns())
        updates = []
        for side, level, quantity in changes:
            levels = book.setdefault(side, {})  # a side Coinbase does not have only goes on the wire
            if Decimal(quantity) == 0:
                levels.pop(level, None)
            else:
                levels[level] = quantity
            updates.append({"side": side, "event_time": now, "price_level": level, "new_quantity": quantity})
        event = {"type": "update", "product_id": product_id, "updates": updates}
        sent = 0
        for conn in list(self.connections):
            if product_id in conn.channels.get("level2", set()) and not self.silent:
                await self._send(conn, "l2_data", [event])
                sent += 1
        return sent

    async def send_raw(self, text: str) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(text)

    def skip_sequence(self, count: int) -> None:
        for conn in self.connections:
            conn.seq += count

    def drop(self) -> None:
        """Cut every connection without a close frame (a network failure)."""
        for conn in list(self.connections):
            conn.ws.transport.abort()
