import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from brokerage.models import Order, OrderStatus, OrderType, Reason, Side, TimeInForce
from brokerage.services import order_fill, order_routed_end, trading_state_refusal
from kernel.errors import ServiceError
from kernel.redis import sync_client
from marketdata.models import Venue, VenueKind
from users.models import User
from users.services import audit_record

from .channels import wake_channel
from .models import (
    CommandAction,
    FixCommand,
    FixFill,
    FixMessage,
    FixOrder,
    FixOrderRequest,
    FixOrderState,
    FixRole,
    FixSession,
    LpPosition,
    PositionCheck,
    RequestKind,
    RequestState,
)
from .selectors import lp_symbol
from .wire import BUY, LIMIT, MARKET, SELL, STOP, STOP_LIMIT

log = logging.getLogger(__name__)


class LogLineLike(Protocol):
    @property
    def session_id(self) -> int: ...
    @property
    def direction(self) -> str: ...
    @property
    def msg_type(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def raw(self) -> str: ...
    @property
    def at_ns(self) -> int: ...


def fix_wake() -> None:
    """Wake runfix once the current transaction commits (it also polls, so a lost wake only delays)."""
    transaction.on_commit(lambda: sync_client().publish(wake_channel(), "1"))


def fix_messages_record(*, lines: Iterable[LogLineLike]) -> int:
    """Append redacted log lines (the caller already redacted them)."""
    rows = [
        FixMessage(
            session_id=line.session_id,
            direction=line.direction,
            msg_type=line.msg_type,
            seq=line.seq,
            raw=line.raw,
            created_at=datetime.fromtimestamp(line.at_ns / 1e9, tz=UTC),
        )
        for line in lines
    ]
    FixMessage.objects.bulk_create(rows)
    return len(rows)


def fix_messages_prune(*, keep_days: int, keep_per_session: int) -> int:
    """Drop log lines older than `keep_days`, and beyond the newest `keep_per_session` per session."""
    deleted, _ = FixMessage.objects.filter(created_at__lt=timezone.now() - timedelta(days=keep_days)).delete()
    for session_id in FixSession.objects.values_list("pk", flat=True):
        cutoff = (
            FixMessage.objects.filter(session_id=session_id)
            .order_by("-id")
            .values_list("id", flat=True)[keep_per_session : keep_per_session + 1]
        )
        if cutoff:
            more, _ = FixMessage.objects.filter(session_id=session_id, id__lte=cutoff[0]).delete()
            deleted += more
    return deleted


@transaction.atomic
def fix_command_request(*, session: FixSession, action: str, user: User | None = None) -> FixCommand:
    if action not in CommandAction.values:
        raise ServiceError("invalid_action", f"unknown FIX session action {action!r}", status_code=400)
    command = FixCommand.objects.create(session=session, action=action, requested_by=user)
    fix_wake()
    return command


def fix_command_complete(*, command: FixCommand, result: str) -> None:
    FixCommand.objects.filter(pk=command.pk, done_at__isnull=True).update(
        done_at=timezone.now(), result=result[:200]
    )


# -- A-Book orders -------------------------------------------------------------------------------------
QTY_DIGITS = Decimal("1e-8")
PRICE_DIGITS = Decimal("1e-10")
TIF: dict[str, str] = {TimeInForce.GTC: "1", TimeInForce.GTD: "6"}


def _client_fill(fix_order: FixOrder, *, exec_id: str, qty: Decimal, price: Decimal) -> None:
    """Book one LP execution as the client's deal (brokerage.order_fill) at the LP price plus the
    group's markup. Once the LP has filled the client's whole volume, the last execution books what
    is left of the order, so lots rounded per execution never leave a sliver working. A booking
    failure never undoes the LP facts already recorded: it is kept on the FIX order for the operator."""
    order = fix_order.order
    complete = (fix_order.cum_qty / fix_order.contract_size).quantize(QTY_DIGITS) >= order.volume
    # The deal records the LP's venue (the session's); the session itself is in its external id.
    venue = FixSession.objects.filter(pk=fix_order.session_id).values_list("venue__code", flat=True).first()
    try:
        with transaction.atomic():
            order_fill(
                order_id=fix_order.order_id,
                price=price.quantize(PRICE_DIGITS),
                external_id=f"fix:{fix_order.session_id}:{exec_id}",
                volume=None if complete else (qty / fix_order.contract_size).quantize(QTY_DIGITS),
                venue=venue or "",
            )
    except ServiceError as exc:
        fix_order.text = f"client booking failed: {exc.code}: {exc.message}"[:200]
        log.error("fix order %s: %s", fix_order.cl_ord_id, fix_order.text)


def _settle(fix_order: FixOrder) -> None:
    """Once the LP order is final, end what the LP left unfilled of the client order (nothing when
    its fills booked all of it): rejected, or cancelled or expired keeping its fills."""
    if fix_order.settled or fix_order.is_open:
        return
    if fix_order.state == FixOrderState.REJECTED and fix_order.cum_qty == 0:
        status: Literal["rejected", "cancelled", "expired"] = "rejected"
    else:
        status = "expired" if fix_order.state == FixOrderState.EXPIRED else "cancelled"
    requested = (
        fix_order.requests.filter(kind=RequestKind.CANCEL, state=RequestState.ACCEPTED)
        .values_list("reason", flat=True)
        .first()
        if fix_order.state == FixOrderState.CANCELLED
        else None
    )
    order_routed_end(
        order_id=fix_order.order_id,
        status=status,
        reason=fix_order.text or f"{fix_order.get_state_display()} at the LP",
        external_id=fix_order.lp_order_id,
        close_reason=requested,
    )
    fix_order.settled = True
    fix_order.done_at = fix_order.done_at or timezone.now()


ORD_TYPES: dict[str, str] = {
    OrderType.MARKET: MARKET,
    OrderType.LIMIT: LIMIT,
    OrderType.STOP: STOP,
    OrderType.STOP_LIMIT: STOP_LIMIT,
}


def _locked(fix_order: FixOrder) -> FixOrder:
    """The FIX order re-read under lock, its client order's row locked first: the order in which
    every writer takes them (client order, FIX order, then the account), so none deadlocks another."""
    Order.objects.select_for_update().filter(pk=fix_order.order_id).exists()
    return FixOrder.objects.select_for_update(of=("self",)).select_related("order").get(pk=fix_order.pk)


@transaction.atomic
def fix_order_route(*, order: Order) -> FixOrder | None:
    """Queue a routed client order for the FIX session the router chose at submit (a FixOrder outbox
    row, unique per order); the order is rejected when that session can no longer trade. The order
    row is locked first, as a client's cancel locks it: an order cancelled meanwhile is not queued."""
    if not Order.objects.select_for_update().filter(pk=order.pk, status=OrderStatus.ROUTED).exists():
        return None
    session = FixSession.objects.filter(name=order.route).first()
    if session is None or not session.enabled or not session.does_trading:
        order_routed_end(
            order_id=order.pk, status="rejected", reason=f"FIX session {order.route!r} cannot trade"
        )
        log.warning("order %s: FIX session %r cannot trade; rejected", order.pk, order.route)
        return None
    instrument = order.instrument
    # The kill switch may have changed since the order was taken: nothing it forbids goes to the LP.
    refusal = trading_state_refusal(
        order.account,
        instrument,
        venues=(session.venue.code,) if session.venue is not None else (),
        opening=order.position_id is None,
        reason=order.reason,
    )
    if refusal is not None:
        order_routed_end(order_id=order.pk, status="rejected", reason=refusal.message)
        log.warning("order %s: %s; rejected", order.pk, refusal.code)
        return None
    try:
        with transaction.atomic():
            fix_order = FixOrder.objects.create(
                order=order,
                session=session,
                cl_ord_id=str(order.pk),
                current_cl_ord_id=str(order.pk),
                symbol=lp_symbol(session=session, instrument=instrument),
                side=BUY if order.side == Side.BUY else SELL,
                ord_type=ORD_TYPES[order.type],
                time_in_force="3" if order.type == OrderType.MARKET else TIF.get(order.time_in_force, "1"),
                expire_time=order.expires_at if order.time_in_force == TimeInForce.GTD else None,
                quantity=(order.volume * instrument.contract_size).quantize(QTY_DIGITS),
                contract_size=instrument.contract_size,
                price=order.price,
                stop_px=order.stop_price,
                # staleness counts from the client's order, however late runfix routes it
                created_at=order.created_at,
            )
    except IntegrityError:
        return FixOrder.objects.get(order=order)
    fix_wake()
    return fix_order


def fix_orders_claim(*, session_id: int, max_age_s: float) -> list[FixOrder]:
    """Take the session's unsent orders for sending, each exactly once (a conditional transition
    from pending to sent). Orders older than `max_age_s` are stale: rejected, never sent; a
    good-till-date order whose expiry passed in the outbox ends expired, never sent."""
    now = timezone.now()
    claimed = []
    for fix_order in FixOrder.objects.filter(session_id=session_id, state=FixOrderState.PENDING).order_by(
        "id"
    ):
        expired = fix_order.expire_time is not None and fix_order.expire_time <= now
        if expired or (now - fix_order.created_at).total_seconds() > max_age_s:
            with transaction.atomic():
                fix_order = _locked(fix_order)
                if fix_order.state == FixOrderState.PENDING:
                    fix_order.state = FixOrderState.EXPIRED if expired else FixOrderState.REJECTED
                    fix_order.text = "expired before it was sent" if expired else "stale: not sent in time"
                    fix_order.done_at = now
                    _settle(fix_order)
                    fix_order.save(update_fields=["state", "text", "settled", "done_at"])
            continue
        if FixOrder.objects.filter(pk=fix_order.pk, state=FixOrderState.PENDING).update(
            state=FixOrderState.SENT, sent_at=now
        ):
            fix_order.state, fix_order.sent_at = FixOrderState.SENT, now
            claimed.append(fix_order)
    return claimed


def fix_order_status_requested(*, fix_order: FixOrder) -> None:
    FixOrder.objects.filter(pk=fix_order.pk).update(
        status_requested_at=timezone.now(), status_requests=F("status_requests") + 1
    )


ORD_STATUS = {
    "0": FixOrderState.NEW,
    "1": FixOrderState.PARTIALLY_FILLED,
    "2": FixOrderState.FILLED,
    "3": FixOrderState.CANCELLED,  # done for day
    "4": FixOrderState.CANCELLED,
    "8": FixOrderState.REJECTED,
    "C": FixOrderState.EXPIRED,
}


STATE_RANK: dict[str, int] = {
    FixOrderState.PENDING: 0,
    FixOrderState.SENT: 1,
    FixOrderState.NEW: 2,
    FixOrderState.PARTIALLY_FILLED: 3,
    FixOrderState.FILLED: 4,
    FixOrderState.CANCELLED: 4,
    FixOrderState.EXPIRED: 4,
    FixOrderState.REJECTED: 4,
}


def _decimal_field(fields: dict[str, str], tag: str) -> Decimal | None:
    try:
        return Decimal(fields[tag]) if tag in fields else None
    except InvalidOperation:
        return None


def _add_fill(fix_order: FixOrder, *, exec_id: str, qty: Decimal, price: Decimal) -> bool:
    """Record one LP execution; False when this ExecID was already recorded (a duplicate report)."""
    try:
        with transaction.atomic():
            FixFill.objects.create(
                fix_order=fix_order,
                session_id=fix_order.session_id,
                exec_id=exec_id,
                quantity=qty,
                price=price,
            )
    except IntegrityError:
        return False
    fix_order.cum_qty += qty
    fix_order.notional += qty * price
    signed = qty if fix_order.side == BUY else -qty
    position, _ = LpPosition.objects.select_for_update().get_or_create(
        session_id=fix_order.session_id, symbol=fix_order.symbol
    )
    position.quantity += signed
    position.save(update_fields=["quantity", "updated_at"])
    _client_fill(fix_order, exec_id=exec_id, qty=qty, price=price)
    return True


@transaction.atomic
def fix_execution_report_apply(*, session_id: int, fields: dict[str, str]) -> FixOrder | None:
    """Apply an ExecutionReport (8) to its order: acknowledgements, fills (once per ExecID, each
    booked for the client), cancels, replaces, rejects and order-status answers; end what is left
    of the client order when the LP order is final."""
    base = fields.get("11", "").split(".", 1)[0]
    ids = FixOrder.objects.filter(session_id=session_id, cl_ord_id=base).values_list("pk", "order_id").first()
    if ids is None:
        log.warning("fix session=%s execution report for unknown ClOrdID %r", session_id, fields.get("11"))
        return None
    # The client order first, then the FIX order (the account comes last, in the booking), as a
    # client's cancel takes them (fix_order_client_cancel).
    fix_order = _locked(FixOrder(pk=ids[0], order_id=ids[1]))
    exec_type, ord_status = fields.get("150", ""), fields.get("39", "")
    if fields.get("37") and fields["37"] != "NONE":
        fix_order.lp_order_id = fields["37"]
    if exec_type != "I" and fix_order.acked_at is None:
        fix_order.acked_at = timezone.now()
    if exec_type == "F":
        qty, px = _decimal_field(fields, "32"), _decimal_field(fields, "31")
        if qty is None or px is None or qty <= 0:
            log.warning("fix order %s: trade report without LastQty/LastPx", fix_order.cl_ord_id)
        elif not _add_fill(fix_order, exec_id=fields.get("17", ""), qty=qty, price=px):
            log.info("fix order %s: duplicate ExecID %s ignored", fix_order.cl_ord_id, fields.get("17"))
            return fix_order
    elif exec_type == "I":
        _apply_status(fix_order, fields)
        _resolve_queried_requests(fix_order, fields)
    elif exec_type == "5":
        fix_order.current_cl_ord_id = fields.get("11", fix_order.current_cl_ord_id)
        fix_order.quantity = _decimal_field(fields, "38") or fix_order.quantity
        fix_order.price = _decimal_field(fields, "44") or fix_order.price
        FixOrderRequest.objects.filter(cl_ord_id=fields.get("11", "")).update(state=RequestState.ACCEPTED)
    elif exec_type in ("4", "C", "3"):
        FixOrderRequest.objects.filter(cl_ord_id=fields.get("11", "")).update(state=RequestState.ACCEPTED)
    state = ORD_STATUS.get(ord_status)
    if exec_type == "I" and ord_status == "8" and fields.get("103") == "5" and fix_order.cum_qty == 0:
        state, fix_order.text = FixOrderState.REJECTED, "unknown at the LP: never received"
    elif exec_type == "8":
        fix_order.text = f"rejected ({fields.get('103', '?')}): {fields.get('58', '')}"[:200]
    if state is not None and fix_order.is_open and STATE_RANK[state] >= STATE_RANK[fix_order.state]:
        fix_order.state = state
    _settle(fix_order)
    fix_order.save()
    return fix_order


def _apply_status(fix_order: FixOrder, fields: dict[str, str]) -> None:
    """An order-status answer: executions we never saw (lost while disconnected) become one fill
    for the difference, at the price implied by the LP's average."""
    cum, avg = _decimal_field(fields, "14"), _decimal_field(fields, "6")
    if cum is None or avg is None or cum <= fix_order.cum_qty:
        return
    missing = cum - fix_order.cum_qty
    price = ((avg * cum - fix_order.notional) / missing).quantize(PRICE_DIGITS)
    _add_fill(fix_order, exec_id=f"status:{fix_order.lp_order_id}:{cum}", qty=missing, price=price)


# How many times a cancel or cancel/replace is sent before an unanswered one is given up
REQUEST_MAX_ATTEMPTS = 3
FINAL_ORD_STATUSES = frozenset({"2", "3", "4", "8", "C"})


def _resolve_queried_requests(fix_order: FixOrder, fields: dict[str, str]) -> None:
    """An order-status answer settles the requests we asked it about (fix_request_queried): the
    order is final, so the request is over (a cancel accepted if the order ended cancelled); the
    LP shows the request's ClOrdID, so it took it (a replace applied); it shows a cancel or replace
    pending, so we wait; else the LP never got it: sent again, or given up after
    REQUEST_MAX_ATTEMPTS sends (so it blocks no later cancel)."""
    ord_status, shown = fields.get("39", ""), fields.get("11", "")
    for request in fix_order.requests.filter(state=RequestState.SENT, queried_at__isnull=False):
        request.queried_at = None
        if shown == request.cl_ord_id and (request.kind == RequestKind.REPLACE or ord_status == "4"):
            request.state = RequestState.ACCEPTED
            if request.kind == RequestKind.REPLACE:
                fix_order.current_cl_ord_id = shown
                fix_order.quantity = _decimal_field(fields, "38") or fix_order.quantity
                fix_order.price = _decimal_field(fields, "44") or fix_order.price
        elif ord_status in FINAL_ORD_STATUSES:
            cancelled = request.kind == RequestKind.CANCEL and ord_status == "4"
            request.state = RequestState.ACCEPTED if cancelled else RequestState.REJECTED
            request.text = "" if cancelled else f"the order is final at the LP (OrdStatus {ord_status})"
        elif shown == request.cl_ord_id or ord_status in ("6", "E"):
            request.sent_at = timezone.now()  # pending at the LP: asked about again a timeout from now
        elif request.attempts < REQUEST_MAX_ATTEMPTS:
            request.state = RequestState.PENDING
            log.warning("fix request %s: the LP never got it; sending it again", request.cl_ord_id)
        else:
            request.state = RequestState.REJECTED
            request.text = f"the LP never got it ({request.attempts} sends)"
            log.error("fix request %s: %s; given up", request.cl_ord_id, request.text)
        request.save(update_fields=["state", "text", "queried_at", "sent_at"])


def fix_request_queried(*, request: FixOrderRequest) -> None:
    FixOrderRequest.objects.filter(pk=request.pk, state=RequestState.SENT).update(queried_at=timezone.now())


@transaction.atomic
def fix_request_unanswered(*, request: FixOrderRequest) -> FixOrderRequest:
    """A request whose order-status query also went unanswered for a timeout: sent again (back to
    the outbox), or rejected after REQUEST_MAX_ATTEMPTS sends, or when its order has ended."""
    fix_order = _locked(request.fix_order)
    request = FixOrderRequest.objects.select_for_update().get(pk=request.pk)
    if request.state != RequestState.SENT:
        return request
    request.queried_at = None
    if not fix_order.is_open:
        request.state, request.text = RequestState.REJECTED, f"the order ended ({fix_order.state}) unanswered"
    elif request.attempts < REQUEST_MAX_ATTEMPTS:
        request.state = RequestState.PENDING
    else:
        request.state = RequestState.REJECTED
        request.text = f"no answer from the LP ({request.attempts} sends)"
        log.error("fix request %s: %s; given up", request.cl_ord_id, request.text)
    request.save(update_fields=["state", "text", "queried_at"])
    if request.state == RequestState.PENDING:
        fix_wake()
    return request


@transaction.atomic
def fix_cancel_reject_apply(*, session_id: int, fields: dict[str, str]) -> None:
    """An OrderCancelReject (9) of a request still waiting for its answer (a late one for a request
    already settled changes nothing)."""
    text = f"rejected ({fields.get('102', '?')}): {fields.get('58', '')}"[:200]
    FixOrderRequest.objects.filter(
        fix_order__session_id=session_id,
        cl_ord_id=fields.get("11", ""),
        state__in=(RequestState.PENDING, RequestState.SENT),
    ).update(state=RequestState.REJECTED, text=text)


def _request(
    *,
    fix_order: FixOrder,
    kind: str,
    quantity: Decimal | None,
    price: Decimal | None,
    reason: str = Reason.OPERATOR,
) -> FixOrderRequest:
    """A request for `fix_order`, which the caller has _locked (requests are numbered in turn)."""
    if not fix_order.is_open or fix_order.state == FixOrderState.PENDING:
        raise ServiceError(
            "order_not_working", f"Order {fix_order.cl_ord_id} is not working at the LP.", status_code=409
        )
    n = fix_order.requests.count() + 1
    request = FixOrderRequest.objects.create(
        fix_order=fix_order,
        kind=kind,
        cl_ord_id=f"{fix_order.cl_ord_id}.{n}",
        quantity=quantity,
        price=price,
        reason=reason,
    )
    fix_wake()
    return request


@transaction.atomic
def fix_order_cancel_request(*, fix_order: FixOrder, reason: str = Reason.OPERATOR) -> FixOrderRequest:
    """Ask the LP to cancel a working order (OrderCancelRequest F); a cancel already on its way is
    not asked twice. `reason`: whose request it is (the client order's close reason)."""
    fix_order = _locked(fix_order)
    waiting = fix_order.requests.filter(
        kind=RequestKind.CANCEL, state__in=(RequestState.PENDING, RequestState.SENT)
    ).first()
    if waiting is not None:
        return waiting
    return _request(fix_order=fix_order, kind=RequestKind.CANCEL, quantity=None, price=None, reason=reason)


@transaction.atomic
def fix_order_client_cancel(*, order_id: int, reason: str) -> None:
    """Cancel a routed client order (FixGateway.cancel, brokerage's LP gateway). Never sent to the LP (no
    FIX order yet, or one still in the outbox): ended now. Working at the LP: an OrderCancelRequest,
    and the LP's answer ends it.

    Locks, in the order every writer of these rows takes them: the client order (fix_order_route
    locks it before queueing), its FIX order (fix_orders_claim's conditional update, the execution
    reports), then the account (order_routed_end). So an order is either stopped here or sent, and
    a cancel never deadlocks with the LP's reports."""
    if not Order.objects.select_for_update().filter(pk=order_id, status=OrderStatus.ROUTED).exists():
        raise ServiceError("order_not_routed", f"Order {order_id} is not routed.", status_code=409)
    fix_order = FixOrder.objects.select_for_update(of=("self",)).filter(order_id=order_id).first()
    if fix_order is not None and fix_order.state != FixOrderState.PENDING:
        fix_order_cancel_request(fix_order=fix_order, reason=reason)
        return
    text = "cancelled before it was sent to the LP"
    if fix_order is not None:
        FixOrder.objects.filter(pk=fix_order.pk).update(
            state=FixOrderState.CANCELLED, text=text, done_at=timezone.now(), settled=True
        )
    order_routed_end(order_id=order_id, status="cancelled", reason=text, close_reason=reason)


@transaction.atomic
def fix_order_replace_request(
    *, fix_order: FixOrder, price: Decimal, quantity: Decimal | None = None
) -> FixOrderRequest:
    """Ask the LP to change a working limit order's price (and quantity) (OrderCancelReplaceRequest G)."""
    fix_order = _locked(fix_order)
    if fix_order.ord_type != LIMIT:
        raise ServiceError("not_a_limit_order", "Only limit orders can be replaced.", status_code=409)
    if price <= 0 or (quantity is not None and quantity <= fix_order.cum_qty):
        raise ServiceError(
            "invalid_replace",
            "Price must be positive and quantity above the filled quantity.",
            status_code=400,
        )
    return _request(fix_order=fix_order, kind=RequestKind.REPLACE, quantity=quantity, price=price)


def fix_requests_claim(*, session_id: int) -> list[FixOrderRequest]:
    claimed = []
    pending = FixOrderRequest.objects.filter(fix_order__session_id=session_id, state=RequestState.PENDING)
    for request in pending.select_related("fix_order").order_by("id"):
        if FixOrderRequest.objects.filter(pk=request.pk, state=RequestState.PENDING).update(
            state=RequestState.SENT, sent_at=timezone.now(), attempts=F("attempts") + 1, queried_at=None
        ):
            request.attempts += 1
            claimed.append(request)
    return claimed


@transaction.atomic
def fix_positions_reconcile(
    *, session_id: int, request_id: str, theirs: dict[str, Decimal]
) -> list[PositionCheck]:
    """Compare the LP's PositionReports with the house's LP positions from our fills, per symbol."""
    ours = dict(LpPosition.objects.filter(session_id=session_id).values_list("symbol", "quantity"))
    now = timezone.now()
    checks = [
        PositionCheck(
            session_id=session_id,
            request_id=request_id,
            symbol=symbol,
            ours=ours.get(symbol, Decimal(0)),
            theirs=theirs.get(symbol, Decimal(0)),
            matched=ours.get(symbol, Decimal(0)) == theirs.get(symbol, Decimal(0)),
            checked_at=now,
        )
        for symbol in sorted(set(ours) | set(theirs))
        if ours.get(symbol) or theirs.get(symbol)
    ]
    PositionCheck.objects.bulk_create(checks)
    mismatched = [c.symbol for c in checks if not c.matched]
    if mismatched:
        log.error("fix session=%s LP positions do not reconcile: %s", session_id, ", ".join(mismatched))
    return checks


def _legacy_role(purpose: object) -> str:
    text = str(purpose or "").lower()
    market = any(word in text for word in ("market", "price", "quote", "feed"))
    trading = any(word in text for word in ("trad", "order", "exec"))
    if market and not trading:
        return FixRole.MARKET_DATA
    if trading and not market:
        return FixRole.TRADING
    return FixRole.BOTH


def _legacy_session(entry: dict[str, Any]) -> tuple[FixSession, list[str]]:
    """An unsaved, disabled FixSession from one entry of the old gateway's sessions.json, and what of
    the entry it could not keep. Raises ValidationError for an entry it cannot use."""
    notes = []
    connection = entry.get("connection") or {}
    protocol = entry.get("fixProtocol") or {}
    auth = entry.get("authentication") or {}
    timing = entry.get("settings") or {}
    if (entry.get("proxy") or {}).get("enabled"):
        notes.append("used a proxy, which Livermore does not: it connects directly")
    session = FixSession(
        name=slugify(str(entry.get("id") or entry.get("name") or ""))[:40],
        begin_string=str(protocol.get("beginString") or "FIX.4.4"),
        sender_comp_id=str(protocol.get("senderCompID") or ""),
        target_comp_id=str(protocol.get("targetCompID") or ""),
        host=str(connection.get("targetIP") or ""),
        port=connection.get("targetPort") or 0,
        tls=bool(connection.get("ssl")),
        heartbeat_s=timing.get("heartBeatInterval") or 30,
        reconnect_s=timing.get("reconnectInterval") or 5,
        role=_legacy_role(entry.get("purpose")),
        username=str(auth.get("username") or ""),
        password=str(auth.get("password") or ""),
        account=str(entry.get("tradingAccount") or ""),
        enabled=False,
    )
    session.full_clean(exclude=["venue"], validate_unique=False, validate_constraints=False)
    return session, notes


def fix_sessions_import(*, entries: list[Any], imported_by: User | None = None) -> dict[str, list[str]]:
    """Create the old FIX gateway's sessions (sessions.json `sessions`), disabled: an operator sets
    the sequence numbers and enables each at cut-over, so two gateways never log on with the same
    CompIDs. A session whose name or CompIDs exist already is left as it is (a second run adds
    nothing). Passwords are stored encrypted and never echoed. Returns names per outcome and the
    problems ("created", "present", "errors", "notes")."""
    result: dict[str, list[str]] = {"created": [], "present": [], "errors": [], "notes": []}
    for index, entry in enumerate(entries, start=1):
        label = (
            str(entry.get("id") or f"session #{index}") if isinstance(entry, dict) else f"session #{index}"
        )
        if not isinstance(entry, dict):
            result["errors"].append(f"{label}: not an object")
            continue
        try:
            session, notes = _legacy_session(entry)
        except ValidationError as exc:
            fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items() if k != "password")
            result["errors"].append(f"{label}: {fields or 'invalid'}")
            continue
        except (TypeError, ValueError) as exc:
            result["errors"].append(f"{label}: {type(exc).__name__}")
            continue
        with transaction.atomic():
            if FixSession.objects.filter(
                Q(name=session.name)
                | Q(
                    begin_string=session.begin_string,
                    sender_comp_id=session.sender_comp_id,
                    target_comp_id=session.target_comp_id,
                )
            ).exists():
                result["present"].append(session.name)
                continue
            if session.role != FixRole.TRADING:
                session.venue, _ = Venue.objects.get_or_create(
                    code=session.name[:32],
                    defaults={
                        "name": str(entry.get("name") or session.name)[:100],
                        "kind": VenueKind.FIX,
                        "enabled": False,
                    },
                )
            session.save()
            if imported_by is not None:
                audit_record(actor=imported_by, action="fix.session_import", target=session)
        result["created"].append(session.name)
        result["notes"] += [f"{session.name}: {note}" for note in notes]
    log.info("fix sessions imported: %d created, %d present", len(result["created"]), len(result["present"]))
    return result


def fix_session_seqnums_set(*, session: FixSession, sender: int, target: int, user: User) -> FixSession:
    """The sequence numbers a session starts from at cut-over (the old gateway's next sender and
    target numbers): only for a disabled session, written to its store by runfix when it next starts it."""
    if sender < 1 or target < 1:
        raise ServiceError(
            "invalid",
            "Sequence numbers start at 1.",
            fields={
                name: ["Must be 1 or more."] for name, n in (("sender", sender), ("target", target)) if n < 1
            },
        )
    with transaction.atomic():
        locked = FixSession.objects.select_for_update().get(pk=session.pk)
        if locked.enabled:
            raise ServiceError(
                "session_enabled",
                f"{locked.name} is enabled: disable it first (its numbers are set before it starts, "
                "at cut-over).",
            )
        locked.next_sender_seq, locked.next_target_seq = sender, target
        locked.save(update_fields=["next_sender_seq", "next_target_seq", "updated_at"])
        audit_record(
            actor=user,
            action="fix.session_seqnums_set",
            target=locked,
            details={"sender": sender, "target": target},
        )
    return locked


def fix_session_seqnums_applied(*, session_id: int, sender: int, target: int) -> None:
    """runfix wrote these numbers to the session's store: clear them (unless an operator set others since)."""
    FixSession.objects.filter(pk=session_id, next_sender_seq=sender, next_target_seq=target).update(
        next_sender_seq=None, next_target_seq=None
    )
