"""Coinbase Advanced Trade: the WebSocket market-data adapter, the REST client, and their JWT auth.

Wire formats: shared/PROTOCOLS.md section 1. Credentials (never logged): `api_key_name`
("organizations/{org}/apiKeys/{key}") and `private_key_pem` (EC P-256 PEM, or an Ed25519 key) from the
venue's encrypted credentials, else the environment variables COINBASE_API_KEY_NAME and
COINBASE_PRIVATE_KEY_PEM, but those only for Coinbase's own hosts (OFFICIAL_ORIGINS): a venue pointed
anywhere else signs with its own credentials or none. Without them the public channels run
unauthenticated.
"""

import base64
import binascii
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import httpx
import jwt
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.book import OrderBook
from marketdata.quotes import Quote, Trade, now_ns

from .base import Adapter, MalformedMessage, QuoteSink, VenueConfig, official_url
from .rest import RestClient, VenueHttpError
from .streaming import price, rfc3339_ns, watched

log = logging.getLogger(__name__)

WS_URL = "wss://advanced-trade-ws.coinbase.com"
REST_URL = "https://api.coinbase.com"
USER_WS_URL = "wss://advanced-trade-ws-user.coinbase.com"
# docs.cdp.coinbase.com advanced-trade-apis: the REST host and the market and user data WebSockets.
OFFICIAL_ORIGINS = frozenset({REST_URL, WS_URL, USER_WS_URL})
API_PREFIX = "/api/v3/brokerage"
JWT_LIFETIME_S = 120
# The documented maximum is 350 buckets per request, but a start..end spanning exactly 350 is
# refused at the boundary by some accounts of it; 300 stays clear of the dispute.
CANDLES_PER_REQUEST = 300
GRANULARITY = {
    "1m": "ONE_MINUTE",
    "5m": "FIVE_MINUTE",
    "15m": "FIFTEEN_MINUTE",
    "1h": "ONE_HOUR",
    "4h": "FOUR_HOUR",
    "1d": "ONE_DAY",
}
ENV_KEY_NAME, ENV_PRIVATE_KEY = "COINBASE_API_KEY_NAME", "COINBASE_PRIVATE_KEY_PEM"
NUMBER_CACHE_MAX = 200_000


class CoinbaseSigner:
    """Builds the short-lived JWTs Coinbase wants on every REST request and WebSocket message."""

    def __init__(self, key_name: str, private_key: str) -> None:
        self.key_name = key_name
        self.key = _load_private_key(private_key)
        self.algorithm = "EdDSA" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "ES256"

    def __repr__(self) -> str:
        return f"CoinbaseSigner({self.algorithm})"

    def token(self, *, uri: str | None = None) -> str:
        """`uri` is "<METHOD> <host><path>" for REST (no query string); WebSocket tokens have none."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": self.key_name,
            "iss": "cdp",
            "nbf": now,
            "exp": now + JWT_LIFETIME_S,
        }
        if uri is not None:
            claims["uri"] = uri
        headers = {"kid": self.key_name, "nonce": secrets.token_hex()}
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)


def _load_private_key(raw: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    # Keys pasted into environment variables often carry literal "\n" for newlines.
    text = raw.replace("\\n", "\n").strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise ValueError("a Coinbase key must be an EC P-256 or an Ed25519 private key")
    try:
        seed = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("the Coinbase private key is neither PEM nor base64") from exc
    if len(seed) not in (32, 64):
        raise ValueError("a base64 Ed25519 Coinbase key must be 32 or 64 bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed[:32])


def coinbase_signer(credentials: Mapping[str, str], *, url: str) -> CoinbaseSigner | None:
    """The signer for requests to `url`: the venue's credentials, else the environment's if `url` is
    Coinbase's, else None (unauthenticated)."""
    key_name, private_key = credentials.get("api_key_name", ""), credentials.get("private_key_pem", "")
    if not (key_name or private_key) and official_url(url, OFFICIAL_ORIGINS):
        key_name, private_key = os.environ.get(ENV_KEY_NAME, ""), os.environ.get(ENV_PRIVATE_KEY, "")
    if not (key_name and private_key):
        return None
    return CoinbaseSigner(key_name, private_key)


class BookResyncTimeout(Exception):
    """A level2 resubscription brought no fresh snapshot in time: reconnect for one."""


class CoinbaseAdapter(Adapter):
    """Advanced Trade market data WebSocket, one handler per channel:

    - `level2` (messages arrive as `l2_data`): one order book per product, built from the snapshot and
      then the absolute level updates; its best bid/ask with sizes -> Quote whenever the top changes.
    - `ticker`: the last trade price per product, carried on the book's quotes as `last`. Without
      `level2` in the venue's `channels` it is the quote source, as before (it only sends on trades).
    - `market_trades` (for a caller that passes a `trade_sink`: the market loop builds the bars from
      them): each trade -> Trade.
    - `heartbeats`: one frame a second, keeping the subscriptions open and the connection visibly
      alive while a book is quiet.
    - `candles` (5-minute buckets): subscribed only for a caller that passes a `bar_sink`; the market
      loop does not, because Coinbase's own bars are stored by the REST backfill.

    `sequence_num` counts every message of the connection, whatever its channel. A gap means some
    message was lost, possibly a level update: every book is dropped (the LP manager is told at once)
    and `level2` is unsubscribed and subscribed again for a fresh snapshot per product (a subscription
    starts with one). If a book that was synced gets no snapshot within `resync_timeout_s`, the
    connection is dropped and reopened, which always starts with snapshots."""

    kind = "coinbase"
    # Coinbase documents WebSocket connections per IP as 8/s (one page) and 750/s (another): stay far
    # below the lower figure.
    connect_limit = (30, 60.0)
    min_stale_after_ms = 3000  # heartbeats every second
    has_trades = True

    def __init__(
        self,
        venue: VenueConfig,
        sink: QuoteSink,
        *,
        bar_sink: Callable[[Bar], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(venue, sink, **kwargs)
        self.url = str(venue.config.get("ws_url", WS_URL))
        default = [
            "heartbeats",
            "level2",
            "ticker",
            *(["market_trades"] if self.trade_sink is not None else []),
            *(["candles"] if bar_sink is not None else []),
        ]
        self.channels: list[str] = list(venue.config.get("channels", default))
        if "market_trades" not in self.channels:
            self.trade_sink = None  # configured without trades: its bars come from its mid
        self.signer = coinbase_signer(venue.credentials, url=self.url)
        self.bar_sink = bar_sink
        self.resync_timeout_s = float(venue.config.get("resync_timeout_s", 5))
        self.sequence_gaps = 0
        self.resyncs = 0
        self.error_frames = 0
        self.books: dict[str, OrderBook] = {product: OrderBook() for product in venue.symbols}
        self.last_trades: dict[str, Decimal] = {}
        self._numbers: dict[str, Decimal] = {}  # wire text -> checked Decimal (see _on_level2)
        self._last_seq: int | None = None
        self._resync_due = False
        self._resync_deadline = 0.0
        self._resyncing: set[str] = set()  # products synced before the resync, awaiting a snapshot
        self._handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "l2_data": self._on_level2,
            "ticker": self._on_ticker,
            "candles": self._on_candles,
            "market_trades": self._on_market_trades,
        }
        # heartbeats, subscriptions and unknown channels only feed the watchdog and the liveness.

    @property
    def silence_timeout_s(self) -> float:
        # Heartbeats arrive every second, so a few quiet seconds already mean a dead connection.
        return float(self.venue.config.get("silence_timeout_s", 10))

    @property
    def quotes_from_book(self) -> bool:
        return "level2" in self.channels

    def subscription(self, channel: str, kind: str = "subscribe") -> dict[str, Any]:
        message: dict[str, Any] = {"type": kind, "channel": channel}
        if channel != "heartbeats":
            message["product_ids"] = sorted(self.venue.symbols)
        if self.signer is not None:
            message["jwt"] = self.signer.token()  # fresh per message: a JWT lives 120 s
        return message

    async def session(self) -> None:
        async with websockets.connect(self.url, max_size=10 * 2**20, open_timeout=10) as ws:
            self.connected()
            self._last_seq = None
            self._resync_due = False
            self._resync_deadline = 0.0
            self._resyncing.clear()
            for book in self.books.values():
                book.reset()
            # Coinbase disconnects a socket that has not subscribed within 5 s: subscribe at once.
            for channel in self.channels:
                await ws.send(json.dumps(self.subscription(channel)))
            log.info("venue=%s subscribed to %s", self.venue.code, ", ".join(self.channels))
            async for raw in watched(self, ws):
                try:
                    self.handle(raw)
                except (MalformedMessage, ValueError, KeyError, TypeError, AttributeError) as exc:
                    self.malformed(raw, exc)
                if self._resync_due:
                    await self._resubscribe_level2(ws)
                elif self._resync_deadline and time.monotonic() > self._resync_deadline:
                    # Only books that were synced count: a product the venue never snapshots (a bad
                    # product id) must not make every resync a reconnect.
                    if any(not self.books[product].synced for product in self._resyncing):
                        raise BookResyncTimeout(
                            f"no level2 snapshot {self.resync_timeout_s:g} s after resync"
                        )
                    self._resync_deadline = 0.0
                    self._resyncing.clear()

    async def _resubscribe_level2(self, ws: Any) -> None:
        self._resync_due = False
        self.resyncs += 1
        await ws.send(json.dumps(self.subscription("level2", "unsubscribe")))
        await ws.send(json.dumps(self.subscription("level2")))
        self._resync_deadline = time.monotonic() + self.resync_timeout_s
        log.info(
            "venue=%s level2 resubscribed for fresh snapshots (resync #%d)", self.venue.code, self.resyncs
        )

    def handle(self, raw: str | bytes) -> None:
        message = json.loads(raw)
        if not isinstance(message, dict):
            raise MalformedMessage("a frame must be a JSON object")
        if message.get("type") == "error":
            self.error_frames += 1
            self.error(f"error frame: {message.get('message', '')}")
            log.warning("venue=%s error frame: %.200s", self.venue.code, message.get("message"))
            return
        self._check_sequence(message.get("sequence_num"))
        handler = self._handlers.get(message["channel"])
        if handler is not None:
            handler(message)

    def _check_sequence(self, seq: object) -> None:
        """Any break in the connection's numbering (a gap, or a number going back) starts a book
        resync; the numbering then continues from this message."""
        if not isinstance(seq, int):
            raise MalformedMessage(f"sequence_num must be an integer, got {seq!r}")
        last = self._last_seq
        if last is not None and seq != last + 1:
            self.sequence_gaps += 1
            log.warning(
                "venue=%s sequence gap: %d after %d (%d gaps)", self.venue.code, seq, last, self.sequence_gaps
            )
            self._resync()
        self._last_seq = seq

    def _resync(self) -> None:
        """Drop every book until its fresh snapshot; the session loop resubscribes level2."""
        if not self.quotes_from_book:
            return
        for product, book in self.books.items():
            if book.synced:
                self._resyncing.add(product)
            book.reset()
        self._resync_due = True
        if self.listener is not None:
            self.listener.venue_down(self.venue.code, list(self.venue.symbols.values()))

    # -- one handler per channel ---------------------------------------------------------------------
    def _on_level2(self, message: Mapping[str, Any]) -> None:
        venue_ts = rfc3339_ns(message["timestamp"])
        for event in message["events"]:
            product = event["product_id"]
            book = self.books.get(product)
            if book is None:
                continue
            kind = event["type"]
            if kind == "snapshot":
                book.reset()
                book.synced = True
            elif not book.synced:
                continue  # an update for a book whose snapshot has not come (yet, or again)
            bids, asks = book.bids, book.asks
            changed = kind == "snapshot"
            numbers = self._numbers
            try:
                for update in event["updates"]:
                    side = update["side"]
                    levels = bids if side == "bid" else asks if side == "offer" else book.side(side)
                    # Levels near the inside and common sizes repeat: parse and check each text once.
                    text = update["price_level"]
                    level = numbers.get(text)
                    if level is None:
                        level = numbers[text] = price(text)
                    text = update["new_quantity"]
                    quantity = numbers.get(text)
                    if quantity is None:
                        quantity = numbers[text] = price(text)
                    if levels.set(level, quantity):
                        changed = True
                if len(numbers) > NUMBER_CACHE_MAX:
                    numbers.clear()
            except (MalformedMessage, ValueError, KeyError, TypeError):
                self._resync()  # the book took part of a message: only a snapshot makes it whole
                raise
            if changed:
                self._emit_top(product, book, venue_ts)

    def _emit_top(self, product: str, book: OrderBook, venue_ts: int) -> None:
        symbol = self.venue.symbols[product]
        top = book.top
        if top is None:
            # One side empty (or crossed): no tradable price from this venue until it is whole again.
            if self.listener is not None:
                self.listener.venue_down(self.venue.code, [symbol])
            return
        bid, bid_size, ask, ask_size = top
        self.emit(
            Quote(
                symbol=symbol,
                venue=self.venue.code,
                bid=bid,
                ask=ask,
                venue_ts=venue_ts,
                recv_ts=now_ns(),
                bid_size=bid_size,
                ask_size=ask_size,
                last=self.last_trades.get(product),
            )
        )

    def _on_ticker(self, message: Mapping[str, Any]) -> None:
        venue_ts = rfc3339_ns(message["timestamp"])
        for event in message["events"]:
            for ticker in event["tickers"]:
                product = ticker["product_id"]
                if product not in self.venue.symbols:
                    continue
                self.last_trades[product] = price(ticker["price"])
                if not self.quotes_from_book:
                    self._ticker_quote(ticker, venue_ts)

    def _ticker_quote(self, ticker: Mapping[str, Any], venue_ts: int) -> None:
        bid, ask = price(ticker["best_bid"]), price(ticker["best_ask"])
        if bid == 0 or ask == 0:
            return  # one side of the book is empty: no tradable quote
        self.emit(
            Quote(
                symbol=self.venue.symbols[ticker["product_id"]],
                venue=self.venue.code,
                bid=bid,
                ask=ask,
                venue_ts=venue_ts,
                recv_ts=now_ns(),
                bid_size=price(ticker["best_bid_quantity"]) if ticker.get("best_bid_quantity") else None,
                ask_size=price(ticker["best_ask_quantity"]) if ticker.get("best_ask_quantity") else None,
                last=price(ticker["price"]),
            )
        )

    def _on_candles(self, message: Mapping[str, Any]) -> None:
        if self.bar_sink is None:
            return
        for event in message["events"]:
            for candle in event["candles"]:
                symbol = self.venue.symbols.get(candle["product_id"])
                if symbol is not None:
                    self.bar_sink(candle_bar(candle, symbol=symbol, timeframe="5m"))

    def _on_market_trades(self, message: Mapping[str, Any]) -> None:
        """Each event (a snapshot of recent trades, then updates batching the last 250 ms) may
        hold many trades, in no documented order: they are emitted in time order, trades of the
        same instant in trade id order (Coinbase numbers a product's trades upwards). A repeat (the
        snapshot after a reconnect) is the market loop's to drop, by trade_id."""
        if self.trade_sink is None:
            return
        recv_ts = now_ns()
        for event in message["events"]:
            trades = [self._trade(t, recv_ts) for t in event["trades"]]
            for trade in sorted((t for t in trades if t is not None), key=_trade_order):
                self.emit_trade(trade)

    def _trade(self, trade: Mapping[str, Any], recv_ts: int) -> Trade | None:
        symbol = self.venue.symbols.get(trade["product_id"])
        if symbol is None:
            return None
        size = price(trade["size"])
        if size == 0:
            raise MalformedMessage(f"trade {trade.get('trade_id')!r} of size 0")
        return Trade(
            symbol=symbol,
            venue=self.venue.code,
            price=price(trade["price"]),
            size=size,
            side=str(trade["side"]),
            trade_id=str(trade["trade_id"]),
            venue_ts=rfc3339_ns(trade["time"]),
            recv_ts=recv_ts,
        )


def _trade_order(trade: Trade) -> tuple[int, int, str]:
    return (trade.venue_ts, int(trade.trade_id) if trade.trade_id.isdigit() else 0, trade.trade_id)


def candle_bar(candle: Mapping[str, Any], *, symbol: str, timeframe: str) -> Bar:
    """A Coinbase candle (every field a string, `start` in UNIX seconds) as our Bar."""
    try:
        start = int(candle["start"])
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"bad candle start {candle.get('start')!r}") from exc
    return Bar(
        symbol=symbol,
        timeframe=timeframe,
        start=start,
        open=price(candle["open"]),
        high=price(candle["high"]),
        low=price(candle["low"]),
        close=price(candle["close"]),
        volume=price(candle["volume"]),
    )


class CoinbaseRest(RestClient):
    """Advanced Trade REST (`/api/v3/brokerage`), with a fresh JWT per request."""

    def __init__(
        self, *, signer: CoinbaseSigner | None, base_url: str = REST_URL, venue: str = "coinbase", **kw: Any
    ) -> None:
        super().__init__(venue=venue, base_url=base_url, **kw)
        self.signer = signer

    def auth_headers(self, request: httpx.Request) -> dict[str, str]:
        if self.signer is None or request.url.path.startswith(f"{API_PREFIX}/market/"):
            return {}  # the public market endpoints take no key
        uri = f"{request.method} {request.url.netloc.decode()}{request.url.path}"
        return {"Authorization": f"Bearer {self.signer.token(uri=uri)}"}

    def _paged(self, path: str, items: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Follow `cursor` while `has_next`."""
        results: list[dict[str, Any]] = []
        cursor, seen = "", set()
        while True:
            page = self.get(f"{API_PREFIX}{path}", {**params, **({"cursor": cursor} if cursor else {})})
            results.extend(page.get(items) or [])
            cursor = page.get("cursor") or ""
            if not page.get("has_next") or not cursor:
                return results
            if cursor in seen:
                raise VenueHttpError(self.venue, 200, f"cursor {cursor!r} repeated while paging {path}")
            seen.add(cursor)

    def accounts(self) -> list[dict[str, Any]]:
        return self._paged("/accounts", "accounts", {"limit": 250})

    def orders(self, **filters: Any) -> list[dict[str, Any]]:
        """GET /orders/historical/batch; list filters (order_status, order_ids, ...) as lists."""
        params = {k: v for k, v in filters.items() if v not in (None, [], "")}
        return self._paged("/orders/historical/batch", "orders", params)

    def public_products(self, product_type: str = "SPOT") -> Any:
        """The public catalogue (`market/products`, no key needed): `{"products": [...],
        "num_products"}`. Without `limit` the venue lists every product in one response."""
        return self.get(f"{API_PREFIX}/market/products", {"product_type": product_type})

    def best_bid_ask(self, product_ids: list[str]) -> list[dict[str, Any]]:
        return list(self.get(f"{API_PREFIX}/best_bid_ask", {"product_ids": product_ids})["pricebooks"])

    def fills(self, **filters: Any) -> list[dict[str, Any]]:
        """GET /orders/historical/fills (List Fills). Its answer is `{"fills": [...], "cursor": str}`
        with no `has_next`: pages follow while the cursor is non-empty."""
        params = {k: v for k, v in filters.items() if v not in (None, [], "")}
        results: list[dict[str, Any]] = []
        cursor, seen = "", set()
        while True:
            page = self.get(
                f"{API_PREFIX}/orders/historical/fills", {**params, **({"cursor": cursor} if cursor else {})}
            )
            fills = page.get("fills") or []
            results.extend(fills)
            cursor = page.get("cursor") or ""
            if not cursor or not fills:
                return results
            if cursor in seen:
                raise VenueHttpError(self.venue, 200, f"cursor {cursor!r} repeated while paging fills")
            seen.add(cursor)

    def candles(
        self,
        *,
        product_id: str,
        symbol: str,
        timeframe: str,
        start: int,
        end: int,
        on_page: Callable[[int], None] | None = None,
    ) -> list[Bar]:
        """Closed bars whose start is in [start, end) (UNIX seconds), oldest first, from the public
        endpoint (no key needed) in windows of CANDLES_PER_REQUEST buckets. `on_page` is told how
        many candles each page brought."""
        step = TIMEFRAME_SECONDS[timeframe]
        first = start - start % step
        closed_before = int(time.time()) - step  # the bucket in progress is not a bar yet
        bars: dict[int, Bar] = {}
        for window in range(first, end, CANDLES_PER_REQUEST * step):
            window_end = min(end, window + CANDLES_PER_REQUEST * step)
            buckets = -(-(window_end - window) // step)
            # `end` one second before the next window, so the count is right whether Coinbase
            # treats `end` as inclusive or exclusive.
            params: dict[str, str | int] = {
                "start": str(window),
                "end": str(window + buckets * step - 1),
                "granularity": GRANULARITY[timeframe],
                "limit": buckets,
            }
            page = self.get(f"{API_PREFIX}/market/products/{product_id}/candles", params)
            candles = page.get("candles") or []
            for candle in candles:
                bar = candle_bar(candle, symbol=symbol, timeframe=timeframe)
                if window <= bar.start < window_end and start <= bar.start and bar.start <= closed_before:
                    bars[bar.start] = bar
            if on_page is not None:
                on_page(len(candles))
        return [bars[k] for k in sorted(bars)]
