"""The trading side of runfix: routes A-Book orders, sends them once from the outbox, applies
execution reports, asks for order status when an acknowledgement, a cancel or a cancel/replace
answer is late or after a reconnect, re-issues what a gap fill covered (never a new order), and
reconciles the house's LP positions with RequestForPositions."""

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.db import close_old_connections, connection
from django.utils import timezone

from kernel.errors import ServiceError

from . import messages, services, wire
from .engine import FixEngine, Sent, SessionHandler
from .models import OPEN_ORDER_STATES, FixOrder, FixOrderRequest, FixOrderState, RequestKind, RequestState
from .selectors import (
    fix_orders_open,
    fix_orders_unacknowledged,
    fix_requests_unanswered,
    orders_awaiting_route,
)

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"2", "3", "4", "8", "C"})


@dataclass
class PositionsRequest:
    request_id: str
    expected: int | None = None
    reports: dict[str, Decimal] = field(default_factory=dict)
    received: int = 0


class OrderDesk:
    def __init__(
        self,
        engine: FixEngine,
        *,
        ack_timeout_s: float = 5.0,
        max_status_requests: int = 5,
        max_order_age_s: float = 30.0,
        route_window_s: float = 24 * 3600,
        route_poll_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.ack_timeout_s = ack_timeout_s
        self.max_status_requests = max_status_requests
        self.max_order_age_s = max_order_age_s
        self.route_window_s = route_window_s
        # routed orders are looked for when the dealing engine announces one (notify_routed), and
        # every route_poll_s in case an announcement was lost (pub/sub is at most once)
        self.route_poll_s = route_poll_s
        self.route_due = threading.Event()
        self._next_route = 0.0
        self.positions: dict[int, PositionsRequest] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        # ClOrdID -> monotonic send time, for the round-trip figure runfix logs and benchmarks read
        self.sent_at: dict[str, float] = {}
        self.round_trips_ms: deque[float] = deque(maxlen=10_000)
        self.sent_seq: dict[tuple[int, str], str] = {}
        self.inbox: queue.SimpleQueue[tuple[SessionHandler, str, str, float] | None] = queue.SimpleQueue()
        self.worker = threading.Thread(target=self._work, name="fix-desk", daemon=True)

    def trading(self) -> list[SessionHandler]:
        return [h for h in self.engine.handlers() if h.cfg.trading and h.state.logged_on]

    # -- engine hooks ----------------------------------------------------------------------------------
    def after_logon(self, handler: SessionHandler) -> None:
        """Orders in flight across the disconnect are asked about, never re-sent; positions checked."""
        if not handler.cfg.trading:
            return
        for fix_order in fix_orders_open(session_id=handler.cfg.id).filter(state__in=OPEN_ORDER_STATES):
            self.request_status(handler, fix_order)
        self.request_positions(handler)

    def notify_routed(self) -> None:
        self.route_due.set()

    def pump(self) -> None:
        mono = time.monotonic()
        if self.route_due.is_set() or mono >= self._next_route:
            self.route_due.clear()
            self._next_route = mono + self.route_poll_s
            self.route()
        older_than = timezone.now() - timedelta(seconds=self.ack_timeout_s)
        for handler in self.trading():
            for fix_order in services.fix_orders_claim(
                session_id=handler.cfg.id, max_age_s=self.max_order_age_s
            ):
                self.send_order(handler, fix_order)
            for request in services.fix_requests_claim(session_id=handler.cfg.id):
                self.send_request(handler, request)
            late = fix_orders_unacknowledged(
                session_id=handler.cfg.id, older_than=older_than, max_requests=self.max_status_requests
            )
            for fix_order in late:
                log.warning("fix order %s: no acknowledgement; asking for its status", fix_order.cl_ord_id)
                self.request_status(handler, fix_order)
            for request in fix_requests_unanswered(session_id=handler.cfg.id, older_than=older_than):
                if request.queried_at is None and request.fix_order.is_open:
                    log.warning("fix request %s: no answer; asking for its order's status", request.cl_ord_id)
                    services.fix_request_queried(request=request)
                    self.request_status(handler, request.fix_order)
                else:
                    services.fix_request_unanswered(request=request)

    def recover(self, handler: SessionHandler, items: list[Sent]) -> None:
        """Stand in for what a gap fill covered (the LP never processed it): a cancel or
        cancel/replace still unanswered goes again (same ClOrdID, PossResend), a status request or
        a positions request is asked again, and a new order is never re-sent: its status is asked,
        and an LP that never got it says so (the order is then rejected)."""
        asked: set[int] = set()
        for item in items:
            cl_ord_id = item.fields.get("11", "")
            if item.msg_type in ("F", "G"):
                request = (
                    FixOrderRequest.objects.filter(
                        fix_order__session_id=handler.cfg.id, cl_ord_id=cl_ord_id, state=RequestState.SENT
                    )
                    .select_related("fix_order")
                    .first()
                )
                if request is not None and request.fix_order.is_open:
                    log.warning("fix request %s: covered by a gap fill; sent again", cl_ord_id)
                    self.send_request(handler, request, poss_resend=True)
            elif item.msg_type in ("D", "H"):
                fix_order = FixOrder.objects.filter(
                    session_id=handler.cfg.id, cl_ord_id=cl_ord_id.split(".", 1)[0]
                ).first()
                if (
                    fix_order is not None
                    and fix_order.is_open
                    and fix_order.pk not in asked
                    and (item.msg_type == "H" or fix_order.state == FixOrderState.SENT)
                ):
                    asked.add(fix_order.pk)
                    self.request_status(handler, fix_order)
            elif item.msg_type == "AN":
                with self.lock:
                    pending = self.positions.get(handler.cfg.id)
                    again = pending is not None and pending.request_id == item.fields.get("710")
                if again:
                    self.request_positions(handler)

    def route(self) -> None:
        since = timezone.now() - timedelta(seconds=self.route_window_s)
        for order in orders_awaiting_route(since=since):
            try:
                services.fix_order_route(order=order)
            except ServiceError as exc:
                log.warning("order %s could not be routed: %s %s", order.pk, exc.code, exc.message)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.inbox.put(None)
        self.worker.join(timeout=10)

    def on_message(self, handler: SessionHandler, msg_type: str, raw: str) -> None:
        """Called on QuickFIX's thread: hand the message to the desk's own thread, in order. Python
        code on a QuickFIX thread gets a fresh thread state per callback (so Django would open a
        database connection per message); the worker keeps one."""
        self.inbox.put((handler, msg_type, raw, time.monotonic()))

    def _work(self) -> None:
        while (item := self.inbox.get()) is not None:
            try:
                self.handle(*item)
            except Exception:
                log.exception("fix desk failed on %s", item[1])
                close_old_connections()
        connection.close()

    def handle(self, handler: SessionHandler, msg_type: str, raw: str, received: float) -> None:
        if msg_type == "8":
            fields = wire.field_map(raw)
            if fields.get("39") in FINAL_STATUSES:
                started = self.sent_at.pop(fields.get("11", ""), None)
                if started is not None and fields["39"] == "2":
                    self.round_trips_ms.append((received - started) * 1000)
            services.fix_execution_report_apply(session_id=handler.cfg.id, fields=fields)
        elif msg_type in ("3", "j"):
            self.on_reject(handler, wire.field_map(raw))
        elif msg_type == "9":
            services.fix_cancel_reject_apply(session_id=handler.cfg.id, fields=wire.field_map(raw))
        elif msg_type == "AO":
            self.on_positions_ack(handler, wire.field_map(raw))
        elif msg_type == "AP":
            self.on_position_report(handler, raw)

    def on_sent(self, handler: SessionHandler, fields: dict[str, str]) -> None:
        """Remember which ClOrdID went out under which MsgSeqNum, to match session-level rejects."""
        with self.lock:
            self.sent_seq[(handler.cfg.id, fields.get("34", ""))] = fields.get("11", "")
            while len(self.sent_seq) > 10_000:
                del self.sent_seq[next(iter(self.sent_seq))]

    def on_reject(self, handler: SessionHandler, fields: dict[str, str]) -> None:
        """A Reject (3) or BusinessMessageReject (j) of one of our order messages: the LP never took it."""
        with self.lock:
            cl_ord_id = self.sent_seq.get((handler.cfg.id, fields.get("45", "")), "")
        if fields.get("372") not in ("D", "F", "G") or not cl_ord_id:
            return
        text = (
            f"{fields.get('372')} rejected by the LP session ({fields.get('373', fields.get('380', '?'))}): "
        )
        text += fields.get("58", "")
        log.error("fix session=%s order %s: %s", handler.cfg.name, cl_ord_id, text)
        if fields["372"] == "D":
            report = {"11": cl_ord_id, "150": "8", "39": "8", "103": "99", "58": text}
            services.fix_execution_report_apply(session_id=handler.cfg.id, fields=report)
        else:
            services.fix_cancel_reject_apply(session_id=handler.cfg.id, fields={"11": cl_ord_id, "58": text})

    # -- orders ----------------------------------------------------------------------------------------
    def send_order(self, handler: SessionHandler, fix_order: FixOrder) -> None:
        self.sent_at[fix_order.cl_ord_id] = time.monotonic()
        handler.send(
            messages.new_order_single(
                cl_ord_id=fix_order.cl_ord_id,
                symbol=fix_order.symbol,
                side=fix_order.side,
                qty=fix_order.quantity,
                ord_type=fix_order.ord_type,
                price=fix_order.price,
                time_in_force=fix_order.time_in_force,
                account=handler.cfg.account,
                stop_px=fix_order.stop_px,
                expire_time=fix_order.expire_time,
            )
        )

    def send_request(
        self, handler: SessionHandler, request: FixOrderRequest, *, poss_resend: bool = False
    ) -> None:
        """Send a cancel or cancel/replace; PossResend (97=Y) when it may have been sent before (a
        retry, or one a gap fill covered): the LP knows it by its ClOrdID."""
        fix_order = request.fix_order
        ids = {"cl_ord_id": request.cl_ord_id, "orig_cl_ord_id": fix_order.current_cl_ord_id}
        qty = request.quantity or fix_order.quantity
        if request.kind == RequestKind.CANCEL:
            msg = messages.order_cancel_request(
                **ids,
                order_id=fix_order.lp_order_id,
                symbol=fix_order.symbol,
                side=fix_order.side,
                qty=qty,
            )
        else:
            msg = messages.order_cancel_replace_request(
                **ids,
                order_id=fix_order.lp_order_id,
                symbol=fix_order.symbol,
                side=fix_order.side,
                qty=qty,
                ord_type=fix_order.ord_type,
                price=request.price or fix_order.price,
                time_in_force=fix_order.time_in_force,
                expire_time=fix_order.expire_time,
            )
        if poss_resend or request.attempts > 1:
            msg.getHeader().setField(97, "Y")
        handler.send(msg)

    def request_status(self, handler: SessionHandler, fix_order: FixOrder) -> None:
        services.fix_order_status_requested(fix_order=fix_order)
        handler.send(
            messages.order_status_request(
                cl_ord_id=fix_order.current_cl_ord_id,
                order_id=fix_order.lp_order_id,
                symbol=fix_order.symbol,
                side=fix_order.side,
            )
        )

    # -- positions -------------------------------------------------------------------------------------
    def request_positions(self, handler: SessionHandler) -> None:
        request_id = f"pos-{int(time.time())}-{next(self._ids)}"
        with self.lock:
            self.positions[handler.cfg.id] = PositionsRequest(request_id)
        handler.send(messages.request_for_positions(req_id=request_id, account=handler.cfg.account))

    def on_positions_ack(self, handler: SessionHandler, fields: dict[str, str]) -> None:
        with self.lock:
            pending = self.positions.get(handler.cfg.id)
            if pending is None or fields.get("710") != pending.request_id:
                return
            if fields.get("728") not in ("0", "2") or fields.get("729") == "2":
                log.warning(
                    "fix session=%s position request refused: %s", handler.cfg.name, fields.get("58", "")
                )
                del self.positions[handler.cfg.id]
                return
            pending.expected = int(fields.get("727", "0")) if fields.get("728") == "0" else 0
        self._maybe_reconcile(handler)

    def on_position_report(self, handler: SessionHandler, raw: str) -> None:
        pairs = wire.fields(raw)
        head = dict(reversed(pairs))  # first value per tag: body fields may follow the group
        _, entries = wire.split_groups(pairs, "703")
        net = sum(
            (
                Decimal(e.get("704", "0")) - Decimal(e.get("705", "0"))
                for e in entries
                if e.get("703") == "FIN"
            ),
            Decimal(0),
        )
        with self.lock:
            pending = self.positions.get(handler.cfg.id)
            if pending is None or head.get("710") != pending.request_id:
                return
            pending.reports[head.get("55", "")] = pending.reports.get(head.get("55", ""), Decimal(0)) + net
            pending.received += 1
            if pending.expected is None and "727" in head:
                pending.expected = int(head["727"])
        self._maybe_reconcile(handler)

    def _maybe_reconcile(self, handler: SessionHandler) -> None:
        with self.lock:
            pending = self.positions.get(handler.cfg.id)
            if pending is None or pending.expected is None or pending.received < pending.expected:
                return
            del self.positions[handler.cfg.id]
        services.fix_positions_reconcile(
            session_id=handler.cfg.id, request_id=pending.request_id, theirs=pending.reports
        )
