"""A FIX 4.4 LP simulator (QuickFIX SocketAcceptor) for development, demos and tests: streams the
simulator venue's random walk as market data, fills orders (market at the current price, limits
when marketable), answers OrderStatusRequest and RequestForPositions. Misbehaviour on demand:
rejects, partial fills, delays, unknown symbols."""

import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import quickfix as qf

from marketdata.adapters.simulator import RandomWalk
from marketdata.quotes import Quote, now_ns

from . import messages as m
from . import wire
from .config import SessionConfig, settings_text

log = logging.getLogger(__name__)

ZERO = Decimal(0)


@dataclass
class SimulatorOptions:
    port: int
    sender_comp_id: str = "LPSIM"
    target_comp_id: str = "LIVERMORE"
    host: str = "127.0.0.1"
    username: str = ""
    password: str = field(default="", repr=False)
    # venue symbol -> {"price": start price, "spread": full spread}, as the simulator venue's config
    symbols: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: int = 7
    vol_bps: float = 0.5
    interval_ms: float = 250
    fill_delay_ms: float = 0
    partial_fills: int = 1
    reject_every: int = 0
    reject_symbols: frozenset[str] = frozenset()
    md_reject_symbols: frozenset[str] = frozenset()
    store_dir: Path = Path("var/fix-sim")


@dataclass
class SimOrder:
    order_id: str
    cl_ord_id: str
    symbol: str
    side: str
    qty: Decimal
    ord_type: str
    price: Decimal | None
    tif: str
    stop_px: Decimal | None = None
    expire_ns: int | None = None  # ExpireTime (126) of a good-till-date order
    triggered: bool = False  # a stop order the market reached: a market (stop) or limit (stop limit)
    cum_qty: Decimal = ZERO
    notional: Decimal = ZERO
    status: str = "A"
    pending_qty: Decimal = ZERO  # scheduled to fill, not yet reported

    @property
    def avg_px(self) -> Decimal:
        return self.notional / self.cum_qty if self.cum_qty else ZERO

    @property
    def leaves(self) -> Decimal:
        return ZERO if self.status in {"2", "4", "8", "C"} else self.qty - self.cum_qty

    @property
    def open(self) -> bool:
        return self.status in {"A", "0", "1"}


class LPSimulator(qf.Application):
    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__()
        self.options = options
        self.walk = RandomWalk(options.symbols, seed=options.seed, vol_bps=options.vol_bps)
        self.prices: dict[str, Quote] = {q.symbol: q for q in self.walk.step("lpsim", now_ns())}
        self.lock = threading.RLock()
        self.sid = qf.SessionID("FIX.4.4", options.sender_comp_id, options.target_comp_id)
        self.md_subs: dict[str, str] = {}  # symbol -> MDReqID
        self.orders: dict[str, SimOrder] = {}  # by every ClOrdID the order had
        self.positions: dict[str, Decimal] = {}
        self.received: dict[str, int] = {}
        self.logged_on = threading.Event()
        self._ids = itertools.count(1)
        self._run_id = now_ns() // 1_000_000
        self._orders_seen = 0
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="lpsim-ticker", daemon=True)
        store = options.store_dir
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        cfg = SessionConfig(
            id=0,
            name="lpsim",
            sender_comp_id=options.sender_comp_id,
            target_comp_id=options.target_comp_id,
            host=options.host,
            port=options.port,
        )
        self.settings = qf.SessionSettings()
        self.settings.setFromString(settings_text(cfg, store_dir=store, acceptor=True))
        self.store_factory = qf.FileStoreFactory(self.settings)
        # Threaded: SocketAcceptor.stop() races its own thread over the socket map (SocketServer::close)
        self.acceptor: qf.Acceptor | None = qf.ThreadedSocketAcceptor(self, self.store_factory, self.settings)

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        assert self.acceptor is not None
        self.acceptor.start()
        self._ticker.start()
        log.info("LP simulator listening on %s:%d", self.options.host, self.options.port)

    def stop(self) -> None:
        """Stop and destroy the acceptor (its destructor unregisters the session from QuickFIX)."""
        self._stopping.set()
        self._ticker.join(timeout=2)
        if self.acceptor is not None:
            self.acceptor.stop()
            self.acceptor = None

    def session(self) -> qf.Session | None:
        return qf.Session.lookupSession(self.sid)

    def _id(self, prefix: str) -> str:
        return f"{prefix}{self._run_id}-{next(self._ids)}"

    def send(self, msg: qf.Message) -> None:
        qf.Session.sendToTarget(msg, self.sid)

    # -- QuickFIX callbacks ---------------------------------------------------------------------------
    def onCreate(self, session_id: qf.SessionID) -> None:
        pass

    def onLogon(self, session_id: qf.SessionID) -> None:
        self.logged_on.set()

    def onLogout(self, session_id: qf.SessionID) -> None:
        self.logged_on.clear()
        with self.lock:
            self.md_subs.clear()

    def toAdmin(self, message: qf.Message, session_id: qf.SessionID) -> None:
        pass

    def fromAdmin(self, message: qf.Message, session_id: qf.SessionID) -> None:
        raw = message.toString()
        fm = wire.field_map(raw)
        self._count(fm.get("35", ""))
        credentials = (fm.get("553"), fm.get("554"))
        if (
            fm.get("35") == "A"
            and self.options.password
            and credentials != (self.options.username, self.options.password)
        ):
            log.warning("LP simulator: logon with bad credentials from %s", fm.get("49"))
            raise qf.RejectLogon("invalid username or password")

    def toApp(self, message: qf.Message, session_id: qf.SessionID) -> None:
        pass

    def fromApp(self, message: qf.Message, session_id: qf.SessionID) -> None:
        raw = message.toString()
        msg_type = message.getHeader().getField(35)
        self._count(msg_type)
        try:
            handler = {
                "V": self.on_md_request,
                "D": self.on_new_order,
                "F": self.on_cancel,
                "G": self.on_replace,
                "H": self.on_status,
                "AN": self.on_positions,
            }.get(msg_type)
            if handler is not None:
                handler(raw)
        except Exception:
            log.exception("LP simulator failed on %s", msg_type)

    def _count(self, msg_type: str) -> None:
        self.received[msg_type] = self.received.get(msg_type, 0) + 1

    # -- market data ----------------------------------------------------------------------------------
    def on_md_request(self, raw: str) -> None:
        pairs = wire.fields(raw)
        fm = dict(reversed(pairs))
        req_id, kind = fm["262"], fm["263"]
        symbols = [v for t, v in pairs if t == "55"]
        for symbol in symbols:
            if kind == "2":
                with self.lock:
                    if self.md_subs.get(symbol) == req_id:
                        del self.md_subs[symbol]
                continue
            if symbol not in self.prices or symbol in self.options.md_reject_symbols:
                self.send(m.md_reject(req_id, "0", f"unknown symbol {symbol}"))
                continue
            with self.lock:
                quote = self.prices[symbol]
                if kind == "1":
                    self.md_subs[symbol] = req_id
            entries = [("0", quote.bid, quote.bid_size), ("1", quote.ask, quote.ask_size)]
            self.send(m.md_snapshot(req_id, symbol, entries))

    def _tick_loop(self) -> None:
        interval = self.options.interval_ms / 1000
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            self._run_due(now)
            if now >= next_tick:
                next_tick = now + interval
                self.tick()
            wait = next_tick - time.monotonic()
            with self.lock:
                if self._due:
                    wait = min(wait, self._due[0][0] - time.monotonic())
            self._stopping.wait(max(0.0, min(wait, 0.05)))

    def tick(self) -> None:
        """One random-walk step: stream it to subscribers, then fill resting limits it crosses."""
        with self.lock:
            self.prices.update((q.symbol, q) for q in self.walk.step("lpsim", now_ns()))
            subs = dict(self.md_subs)
            unique = {id(o): o for o in self.orders.values()}.values()
            resting = [o for o in unique if o.open and o.ord_type in (m.LIMIT, m.STOP, m.STOP_LIMIT)]
        if subs and self.logged_on.is_set():
            for req_id in set(subs.values()):
                entries: list[tuple[str, str, str, Decimal | None, Decimal | None]] = []
                for symbol in (s for s, r in subs.items() if r == req_id):
                    q = self.prices[symbol]
                    entries += [("1", "0", symbol, q.bid, q.bid_size), ("1", "1", symbol, q.ask, q.ask_size)]
                self.send(m.md_incremental(req_id, entries))
        now = now_ns()
        for order in resting:
            if order.expire_ns is not None and order.expire_ns <= now:
                self._expire(order)
            else:
                self._try_fill(order)

    def burst(self, count: int) -> None:
        """Send `count` incremental refreshes back to back (for throughput measurements)."""
        for _ in range(count):
            self.tick()

    # -- orders ---------------------------------------------------------------------------------------
    def on_new_order(self, raw: str) -> None:
        fm = wire.field_map(raw)
        order = SimOrder(
            order_id=self._id("O"),
            cl_ord_id=fm["11"],
            symbol=fm["55"],
            side=fm["54"],
            qty=Decimal(fm["38"]),
            ord_type=fm["40"],
            price=Decimal(fm["44"]) if "44" in fm else None,
            tif=fm.get("59", "0"),
            stop_px=Decimal(fm["99"]) if "99" in fm else None,
            expire_ns=wire.utc_timestamp_ns(fm["126"]) if "126" in fm else None,
        )
        with self.lock:
            self._orders_seen += 1
            nth = self._orders_seen
            if order.cl_ord_id in self.orders:
                self._report(order, "8", "8", rej_reason="6", text="duplicate ClOrdID")
                return
            self.orders[order.cl_ord_id] = order
        reject_nth = self.options.reject_every and nth % self.options.reject_every == 0
        if order.symbol not in self.prices or order.symbol in self.options.reject_symbols or reject_nth:
            order.status = "8"
            reason = "1" if order.symbol not in self.prices else "0"
            self._report(order, "8", "8", rej_reason=reason, text="simulated reject")
            return
        if order.ord_type not in (m.MARKET, m.LIMIT, m.STOP, m.STOP_LIMIT):
            order.status = "8"
            self._report(order, "8", "8", rej_reason="11", text="unsupported order type")
            return
        if order.tif == "6" and (order.expire_ns is None or order.expire_ns <= now_ns()):
            order.status = "8"
            text = "GTD needs ExpireTime" if order.expire_ns is None else "ExpireTime has passed"
            self._report(order, "8", "8", rej_reason="99", text=text)
            return
        order.status = "0"
        self._report(order, "0", "0")
        self._try_fill(order)
        if order.open and order.ord_type == m.LIMIT and order.tif in {"3", "4"} and not order.pending_qty:
            order.status = "4"
            self._report(order, "4", "4", text="not marketable")

    def _try_fill(self, order: SimOrder) -> None:
        with self.lock:
            if not order.open or order.pending_qty:
                return
            quote = self.prices[order.symbol]
            px = quote.ask if order.side == m.BUY else quote.bid
            if order.ord_type in (m.STOP, m.STOP_LIMIT) and not order.triggered:
                assert order.stop_px is not None
                if (order.side == m.BUY and px < order.stop_px) or (
                    order.side != m.BUY and px > order.stop_px
                ):
                    return
                order.triggered = True
            if order.ord_type in (m.LIMIT, m.STOP_LIMIT):
                assert order.price is not None
                if (order.side == m.BUY and px > order.price) or (order.side != m.BUY and px < order.price):
                    return
            remaining = order.qty - order.cum_qty
            pieces = max(1, self.options.partial_fills)
            piece = (remaining / pieces).quantize(Decimal("0.01"), ROUND_DOWN) if pieces > 1 else remaining
            order.pending_qty = remaining
        delay = self.options.fill_delay_ms / 1000
        for i in range(pieces):
            qty = piece if i < pieces - 1 else remaining - piece * (pieces - 1)
            self._schedule(delay * (i + 1), functools.partial(self._fill, order, qty, px))

    def _expire(self, order: SimOrder) -> None:
        with self.lock:
            if not order.open or order.pending_qty:
                return
            order.status = "C"
        self._report(order, "C", "C", text="expired")

    def _fill(self, order: SimOrder, qty: Decimal, px: Decimal) -> None:
        with self.lock:
            if not order.open or qty <= 0:
                order.pending_qty = ZERO
                return
            order.cum_qty += qty
            order.notional += qty * px
            order.pending_qty -= qty
            order.status = "2" if order.cum_qty >= order.qty else "1"
            signed = qty if order.side == m.BUY else -qty
            self.positions[order.symbol] = self.positions.get(order.symbol, ZERO) + signed
        self._report(order, "F", order.status, last_qty=qty, last_px=px)

    def _schedule(self, delay_s: float, action: Callable[[], None]) -> None:
        if delay_s <= 0:
            action()
            return
        with self.lock:
            heapq.heappush(self._due, (time.monotonic() + delay_s, next(self._ids), action))

    def _run_due(self, now: float) -> None:
        while True:
            with self.lock:
                if not self._due or self._due[0][0] > now:
                    return
                _, _, action = heapq.heappop(self._due)
            action()

    def _report(
        self,
        order: SimOrder,
        exec_type: str,
        status: str,
        *,
        last_qty: Decimal | None = None,
        last_px: Decimal | None = None,
        rej_reason: str = "",
        text: str = "",
        orig_cl_ord_id: str = "",
    ) -> None:
        self.send(
            m.execution_report(
                order_id=order.order_id,
                exec_id=self._id("E"),
                exec_type=exec_type,
                ord_status=status,
                cl_ord_id=order.cl_ord_id,
                orig_cl_ord_id=orig_cl_ord_id,
                symbol=order.symbol,
                side=order.side,
                qty=order.qty,
                ord_type=order.ord_type,
                price=order.price,
                leaves_qty=order.leaves,
                cum_qty=order.cum_qty,
                avg_px=order.avg_px,
                last_qty=last_qty,
                last_px=last_px,
                rej_reason=rej_reason,
                text=text,
            )
        )

    def _cancel_reject(self, fm: dict[str, str], response_to: str, order: SimOrder | None) -> None:
        self.send(
            m.order_cancel_reject(
                order_id=order.order_id if order else "NONE",
                cl_ord_id=fm["11"],
                orig_cl_ord_id=fm["41"],
                ord_status=order.status if order else "8",
                response_to=response_to,
                reason="0" if order else "1",
                text="too late to cancel" if order else "unknown order",
            )
        )

    def on_cancel(self, raw: str) -> None:
        fm = wire.field_map(raw)
        with self.lock:
            order = self.orders.get(fm["41"])
            if order is None or not order.open or order.pending_qty:
                self._cancel_reject(fm, "1", order)
                return
            order.status = "4"
            orig, order.cl_ord_id = order.cl_ord_id, fm["11"]
            self.orders[order.cl_ord_id] = order
        self._report(order, "4", "4", orig_cl_ord_id=orig)

    def on_replace(self, raw: str) -> None:
        fm = wire.field_map(raw)
        with self.lock:
            order = self.orders.get(fm["41"])
            new_qty = Decimal(fm["38"])
            if order is None or not order.open or order.pending_qty or new_qty <= order.cum_qty:
                self._cancel_reject(fm, "2", order)
                return
            orig, order.cl_ord_id = order.cl_ord_id, fm["11"]
            order.qty = new_qty
            order.price = Decimal(fm["44"]) if "44" in fm else order.price
            self.orders[order.cl_ord_id] = order
        self._report(order, "5", order.status, orig_cl_ord_id=orig)
        self._try_fill(order)

    def on_status(self, raw: str) -> None:
        fm = wire.field_map(raw)
        with self.lock:
            order = self.orders.get(fm["11"])
        if order is None:
            unknown = SimOrder("NONE", fm["11"], fm["55"], fm["54"], ZERO, m.MARKET, None, "0", status="8")
            self._report(unknown, "I", "8", rej_reason="5", text="unknown order")
        else:
            self._report(order, "I", order.status)

    def on_positions(self, raw: str) -> None:
        fm = wire.field_map(raw)
        req_id, account = fm["710"], fm.get("1", "")
        with self.lock:
            held = {s: q for s, q in self.positions.items() if q}
            prices = {s: self.prices[s] for s in held}
        report_id = self._id("P")
        self.send(m.position_ack(report_id=report_id, req_id=req_id, account=account, count=len(held)))
        for symbol, qty in sorted(held.items()):
            self.send(
                m.position_report(
                    report_id=report_id,
                    req_id=req_id,
                    account=account,
                    symbol=symbol,
                    net_qty=qty,
                    settle_px=prices[symbol].mid,
                    count=len(held),
                )
            )
