"""A-Book orders end to end: routing, NewOrderSingle, execution reports, client booking, cancels,
replaces, status requests, positions. Peers: the LP simulator and the scripted acceptor."""

import contextlib
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from brokerage.models import Deal, Order, OrderStatus, Position
from brokerage.services import account_deposit, account_open, order_cancel, order_submit
from fix import wire
from fix.models import (
    CommandAction,
    FixFill,
    FixOrder,
    FixOrderRequest,
    FixOrderState,
    LpPosition,
    PositionCheck,
    RequestState,
    RoutingAction,
    RoutingRule,
)
from fix.selectors import fix_session_state
from fix.services import (
    fix_command_request,
    fix_order_cancel_request,
    fix_order_replace_request,
    fix_order_route,
    fix_orders_claim,
)
from kernel.errors import ServiceError
from tests.brokerage.conftest import ledger_problems
from tests.support.stack import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal


def fix_order_done(order_id: int) -> FixOrder:
    return wait_until(
        lambda: FixOrder.objects.filter(order_id=order_id, settled=True).select_related("order").first()
    )


def logged_on(session) -> bool:
    state = fix_session_state(session=session)
    return bool(state and state["logged_on"])


@pytest.fixture
def lp(start_simulator, make_session, run_engine):
    """The simulator, a session to it, and runfix's engine logged on."""

    def start(desk=None, **options):
        sim = start_simulator(**options)
        session = make_session(sim.options.port, target_comp_id="LPSIM", name="lp")
        run_engine(desk=desk)
        wait_until(lambda: logged_on(session))
        return sim, session

    return start


def test_an_a_book_market_order_is_filled_by_the_lp_and_booked_for_the_client(lp, a_book):
    sim, session = lp()
    account = a_book(session)

    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.5"))
    assert order.status == OrderStatus.ROUTED
    fix_order = fix_order_done(order.pk)

    assert fix_order.state == FixOrderState.FILLED
    assert (fix_order.symbol, fix_order.side, fix_order.ord_type, fix_order.quantity) == (
        "EUR/USD",
        "1",
        "1",
        50000,
    )
    fill = FixFill.objects.get(fix_order=fix_order)
    sim_order = sim.orders[str(order.pk)]
    assert fill.price == sim_order.avg_px and fill.quantity == 50000
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED and order.fill_price == fill.price + D("0.00002")
    position = Position.objects.get(account=account)
    assert (position.side, position.volume, position.open_price) == ("buy", D("0.5"), order.fill_price)
    deal = Deal.objects.get(order=order)
    assert deal.external_id == f"fix:{session.pk}:{fill.exec_id}"
    assert (deal.venue, deal.quote_seq) == (session.venue.code, None)  # the LP's price, no quote's
    assert LpPosition.objects.get(session=session, symbol="EUR/USD").quantity == 50000
    assert ledger_problems() == []


def test_partial_fills_move_the_order_through_partially_filled_to_filled(lp, a_book):
    _sim, session = lp(partial_fills=3, fill_delay_ms=150)
    account = a_book(session)

    order = order_submit(account=account, symbol="EURUSD", side="sell", volume=D("1"))
    wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.PARTIALLY_FILLED).exists())
    fix_order = fix_order_done(order.pk)

    fills = list(FixFill.objects.filter(fix_order=fix_order).order_by("id"))
    assert [f.quantity for f in fills] == [D("33333.33"), D("33333.33"), D("33333.34")]
    assert fix_order.state == FixOrderState.FILLED and fix_order.cum_qty == 100000
    vwap = sum(f.quantity * f.price for f in fills) / 100000
    order.refresh_from_db()
    assert (order.status, order.filled_volume) == (OrderStatus.FILLED, 1)
    assert order.fill_price == (vwap.quantize(D("1e-10")) - D("0.00002"))
    deals = Deal.objects.filter(order=order).order_by("id")
    assert [(d.volume, d.price, d.external_id) for d in deals] == [
        (f.quantity / 100000, f.price - D("0.00002"), f"fix:{session.pk}:{f.exec_id}") for f in fills
    ]
    position = Position.objects.get(account=account)
    assert (position.volume, position.open_price) == (1, order.fill_price)
    assert LpPosition.objects.get(session=session).quantity == -100000
    assert ledger_problems() == []


def test_an_lp_reject_rejects_the_client_order_without_a_position(lp, a_book):
    _, session = lp(reject_every=1)
    account = a_book(session)

    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    fix_order = fix_order_done(order.pk)

    assert fix_order.state == FixOrderState.REJECTED and "simulated reject" in fix_order.text
    order.refresh_from_db()
    assert (order.status, order.close_reason) == (OrderStatus.REJECTED, "lp")
    assert "simulated reject" in order.close_text and order.margin == 0
    assert not Position.objects.filter(account=account).exists()
    assert not FixFill.objects.exists()


def limit(account, price: str, **kwargs):
    return order_submit(
        account=account, symbol="EURUSD", side="buy", volume=D("1"), type="limit", price=D(price), **kwargs
    )


def resting_at_peer(peer, make_session, run_engine, a_book, lp_order_id: str, **kwargs):
    """A buy limit far below the market sent to the scripted peer, which acknowledges it as New with
    OrderID `lp_order_id`. Returns the account, the order, the NewOrderSingle's fields and the FIX order."""
    account = a_book(make_session(peer.port, role="trading", venue=None))
    run_engine()
    peer.expect("A")
    order = limit(account, "1.00000", **kwargs)
    new_order = peer.expect("D")
    ack = [(37, lp_order_id), (11, str(order.pk)), (17, f"N-{lp_order_id}"), (150, "0"), (39, "0")]
    peer.send("8", [*ack, (55, "EURUSD"), (54, "1"), (151, "100000"), (14, "0"), (6, "0")])
    fix_order = wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.NEW).first())
    return account, order, new_order, fix_order


def test_a_resting_limit_order_is_cancelled_at_the_lp(lp, a_book):
    sim, session = lp()
    account = a_book(session)
    order = limit(account, "1.00000")  # far below the market: rests at the LP
    assert order.status == OrderStatus.ROUTED

    fix_order = wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.NEW).first())
    assert (fix_order.ord_type, fix_order.time_in_force, fix_order.price) == ("2", "1", D("1.00000"))
    request = fix_order_cancel_request(fix_order=fix_order)

    fix_order = fix_order_done(order.pk)
    assert fix_order.state == FixOrderState.CANCELLED
    request.refresh_from_db()
    assert request.state == RequestState.ACCEPTED and request.cl_ord_id == f"{order.pk}.1"
    assert sim.orders[request.cl_ord_id].status == "4"
    order.refresh_from_db()
    assert (order.status, order.margin) == (OrderStatus.CANCELLED, 0)
    account.refresh_from_db()
    assert account.margin_reserved == 0


def test_a_cancel_replace_moves_a_resting_limit_into_the_market_and_it_fills(lp, a_book):
    _sim, session = lp()
    account = a_book(session)
    order = limit(account, "1.00000")
    fix_order = wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.NEW).first())

    fix_order_replace_request(fix_order=fix_order, price=D("1.20000"))
    fix_order = fix_order_done(order.pk)

    assert fix_order.state == FixOrderState.FILLED
    assert (fix_order.current_cl_ord_id, fix_order.price) == (f"{order.pk}.1", D("1.20000"))
    fill = FixFill.objects.get(fix_order=fix_order)
    assert fill.price < D("1.20000")  # filled at the market, better than the limit
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED


def test_a_duplicated_execution_report_produces_one_fill(peer, make_session, run_engine, a_book):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine()
    peer.expect("A")
    peer.expect("AN")

    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    new_order = peer.expect("D")
    assert (new_order["11"], new_order["55"], new_order["54"], new_order["38"], new_order["40"]) == (
        str(order.pk),
        "EURUSD",
        "1",
        "100000",
        "1",
    )
    assert new_order["59"] == "3" and "44" not in new_order
    trade = [(37, "L1"), (11, str(order.pk)), (17, "X-1"), (150, "F"), (39, "2"), (55, "EURUSD"), (54, "1")]
    trade += [(38, "100000"), (32, "100000"), (31, "1.08514"), (151, "0"), (14, "100000"), (6, "1.08514")]
    peer.send("8", trade)
    peer.send("8", trade)  # the same execution again (e.g. after a venue-side replay)
    fix_order = fix_order_done(order.pk)
    time.sleep(0.3)

    assert FixFill.objects.filter(fix_order=fix_order).count() == 1
    fix_order.refresh_from_db()
    assert fix_order.cum_qty == 100000
    assert Deal.objects.filter(order=order).count() == 1
    assert LpPosition.objects.get(session=session).quantity == 100000


def test_an_unacknowledged_order_is_queried_and_an_unknown_one_rejected(
    peer, make_session, run_engine, a_book
):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine(desk={"ack_timeout_s": 0.5})
    peer.expect("A")

    order = order_submit(account=account, symbol="EURUSD", side="sell", volume=D("1"))
    peer.expect("D")  # and never answered
    status = peer.expect("H", timeout=4)
    assert (status["11"], status["54"], status["55"]) == (str(order.pk), "2", "EURUSD")

    unknown = [(37, "NONE"), (11, str(order.pk)), (17, "S-1"), (150, "I"), (39, "8"), (103, "5")]
    peer.send("8", [*unknown, (55, "EURUSD"), (54, "2"), (151, "0"), (14, "0"), (6, "0")])
    fix_order = fix_order_done(order.pk)
    assert fix_order.state == FixOrderState.REJECTED
    order.refresh_from_db()
    assert order.status == OrderStatus.REJECTED


def test_an_order_in_flight_across_a_disconnect_is_queried_after_logon_never_resent(
    peer, make_session, run_engine, a_book
):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine()
    peer.expect("A")

    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("2"))
    peer.expect("D")
    peer.disconnect()  # the line drops before any execution report

    peer.expect("A", timeout=6)
    status = peer.expect("H")
    assert status["11"] == str(order.pk)
    filled = [(37, "L9"), (11, str(order.pk)), (17, "S-9"), (150, "I"), (39, "2"), (55, "EURUSD"), (54, "1")]
    peer.send("8", [*filled, (151, "0"), (14, "200000"), (6, "1.08520")])
    fix_order = fix_order_done(order.pk)

    assert fix_order.state == FixOrderState.FILLED
    assert [(f.quantity, f.price) for f in fix_order.fills.all()] == [(200000, D("1.08520"))]
    assert not [m for m in peer.drain() if m.type == "D"]
    order.refresh_from_db()
    assert order.fill_price == D("1.08522")


def test_a_resend_request_after_an_order_gets_a_gap_fill_and_the_order_is_asked_about_not_resent(
    peer, make_session, run_engine, a_book
):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine()
    peer.expect("A")
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    sent = peer.expect("D")

    peer.send("2", [(7, "1"), (16, "0")])
    gap_fill = peer.expect("4")
    assert gap_fill["123"] == "Y" and int(gap_fill["36"]) > sent.seq
    assert peer.expect("H")["11"] == str(order.pk)
    time.sleep(0.5)
    assert not [m for m in peer.drain() if m.type == "D"]
    assert FixOrder.objects.get(order=order).state == FixOrderState.SENT


def test_an_order_too_old_to_send_is_rejected_not_sent(peer, make_session, run_engine, a_book):
    session = make_session(free_port(), role="trading", venue=None)  # nobody listens there yet
    account = a_book(session)
    run_engine(desk={"max_order_age_s": 0.5})
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    wait_until(lambda: FixOrder.objects.filter(order=order).exists())
    time.sleep(0.7)

    session.port = peer.port
    session.save()
    peer.expect("A")
    fix_order = fix_order_done(order.pk)
    assert fix_order.state == FixOrderState.REJECTED and fix_order.text.startswith("stale")
    time.sleep(0.3)
    assert not [m for m in peer.drain() if m.type == "D"]


def test_lp_positions_reconcile_and_a_mismatch_is_recorded(lp, a_book):
    sim, session = lp()
    account = a_book(session)
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.3"))
    fix_order_done(order.pk)

    fix_command_request(session=session, action=CommandAction.POSITIONS)
    check = wait_until(lambda: PositionCheck.objects.filter(session=session, symbol="EUR/USD").first())
    assert (check.ours, check.theirs, check.matched) == (30000, 30000, True)

    sim.positions["USD/JPY"] = D("-5000")  # a trade the house never saw
    fix_command_request(session=session, action=CommandAction.POSITIONS)
    mismatch = wait_until(lambda: PositionCheck.objects.filter(session=session, matched=False).first())
    assert (mismatch.symbol, mismatch.ours, mismatch.theirs) == ("USD/JPY", 0, -5000)


def test_a_cancel_the_lp_refuses_is_recorded_and_the_order_keeps_working(
    peer, make_session, run_engine, a_book
):
    _account, order, new_order, fix_order = resting_at_peer(peer, make_session, run_engine, a_book, "L5")
    assert (new_order["40"], new_order["44"], new_order["59"]) == ("2", "1", "1")

    request = fix_order_cancel_request(fix_order=fix_order)
    cancel = peer.expect("F")
    assert (cancel["11"], cancel["41"], cancel["37"]) == (request.cl_ord_id, str(order.pk), "L5")
    refusal = [(37, "L5"), (11, request.cl_ord_id), (41, str(order.pk)), (39, "0"), (434, "1"), (102, "0")]
    peer.send("9", [*refusal, (58, "too late")])

    request = wait_until(
        lambda: FixOrderRequest.objects.filter(pk=request.pk, state=RequestState.REJECTED).first()
    )
    assert request.text == "rejected (0): too late"
    fix_order.refresh_from_db()
    assert fix_order.state == FixOrderState.NEW


def test_a_client_cancel_asked_twice_before_the_lp_answers_sends_one_cancel_request(
    peer, make_session, run_engine, a_book
):
    _account, order, _new_order, _fix_order = resting_at_peer(peer, make_session, run_engine, a_book, "L6")

    assert order_cancel(order=order).status == OrderStatus.ROUTED
    cancel = peer.expect("F")
    assert order_cancel(order=order).status == OrderStatus.ROUTED  # the LP has not answered yet
    request = FixOrderRequest.objects.get(fix_order__order=order)
    assert (cancel["11"], request.reason, request.state) == (request.cl_ord_id, "client", RequestState.SENT)
    done = [(37, "L6"), (11, request.cl_ord_id), (41, str(order.pk)), (17, "C-6"), (150, "4"), (39, "4")]
    peer.send("8", [*done, (55, "EURUSD"), (54, "1"), (151, "0"), (14, "0"), (6, "0")])
    fix_order_done(order.pk)
    order.refresh_from_db()
    assert (order.status, order.close_reason) == (OrderStatus.CANCELLED, "client")


def test_a_rule_for_one_account_routes_it_to_the_lp_while_its_group_is_internalised(lp, a_book):
    _sim, session = lp()
    account = a_book(session)
    rule = RoutingRule.objects.get(name="all to the LP")  # saved: the routing version moves on
    rule.account, rule.priority = account, 1
    rule.save()
    RoutingRule.objects.create(priority=5, name="group B", group=account.group, action=RoutingAction.B_BOOK)
    other = account_open(owner=account.owner, group=account.group)
    account_deposit(account=other, amount=D("10000"))

    internal = order_submit(account=other, symbol="EURUSD", side="buy", volume=D("0.1"))
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))

    assert (internal.status, internal.book, internal.fill_price) == (OrderStatus.FILLED, "B", D("1.08514"))
    assert (order.status, order.book, order.route) == (OrderStatus.ROUTED, "A", "lp")
    fix_order = fix_order_done(order.pk)
    assert fix_order.state == FixOrderState.FILLED
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED and order.fill_price == fix_order.avg_px + D("0.00002")
    assert not FixOrder.objects.filter(order=internal).exists()


def test_runfix_routes_an_order_when_the_engine_announces_it_without_waiting_for_its_poll(lp, a_book):
    _sim, session = lp(desk={"route_poll_s": 600})
    account = a_book(session)
    time.sleep(0.3)  # past the first poll at start-up

    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    fix_order = wait_until(
        lambda: FixOrder.objects.filter(order=order, state=FixOrderState.FILLED).first(), timeout_s=5
    )
    assert fix_order.cum_qty == 10000


def test_a_stop_order_goes_to_the_lp_as_a_stop(peer, make_session, run_engine, a_book):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine()
    peer.expect("A")

    order = order_submit(
        account=account, symbol="EURUSD", side="sell", volume=D("1"), type="stop", stop_price=D("1.08000")
    )
    new_order = peer.expect("D")
    assert (new_order["11"], new_order["40"], new_order["99"], new_order["59"]) == (
        str(order.pk),
        "3",
        "1.08",
        "1",
    )
    assert "44" not in new_order


def test_duplicated_reject_reports_end_the_client_order_once(peer, make_session, run_engine, a_book):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine()
    peer.expect("A")
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    peer.expect("D")
    account.refresh_from_db()
    assert account.margin_reserved == order.margin > 0

    reject = [
        (37, "NONE"),
        (11, str(order.pk)),
        (17, "R-1"),
        (150, "8"),
        (39, "8"),
        (55, "EURUSD"),
        (54, "1"),
    ]
    reject += [(103, "3"), (58, "no liquidity"), (151, "0"), (14, "0"), (6, "0")]
    peer.send("8", reject)
    peer.send("8", reject)
    fix_order_done(order.pk)
    time.sleep(0.3)

    order.refresh_from_db()
    assert (order.status, order.close_text) == (OrderStatus.REJECTED, "rejected (3): no liquidity")
    account.refresh_from_db()
    assert account.margin_reserved == 0
    assert ledger_problems() == []


def test_a_partial_fill_then_a_cancel_keeps_the_fill_and_ends_the_rest(
    peer, make_session, run_engine, a_book
):
    session = make_session(peer.port, role="trading", venue=None)
    account = a_book(session)
    run_engine()
    peer.expect("A")
    order = limit(account, "1.08000")
    peer.expect("D")

    head = [(37, "L7"), (11, str(order.pk)), (55, "EURUSD"), (54, "1"), (38, "100000")]
    partial = [*head, (17, "P-1"), (150, "F"), (39, "1"), (32, "40000"), (31, "1.07990")]
    partial += [(151, "60000"), (14, "40000"), (6, "1.07990")]
    cancelled = [*head, (17, "C-1"), (150, "4"), (39, "4"), (151, "0"), (14, "40000"), (6, "1.07990")]
    for message in (partial, partial, cancelled, cancelled):
        peer.send("8", message)
    fix_order = fix_order_done(order.pk)
    time.sleep(0.3)

    assert (fix_order.state, fix_order.cum_qty) == (FixOrderState.CANCELLED, 40000)
    order.refresh_from_db()
    assert (order.status, order.filled_volume, order.fill_price) == (
        OrderStatus.CANCELLED,
        D("0.4"),
        D("1.07992"),
    )
    assert (order.external_id, order.margin) == ("L7", 0)
    deal = Deal.objects.get(order=order)
    assert (deal.volume, deal.external_id) == (D("0.4"), f"fix:{session.pk}:P-1")
    assert Position.objects.get(account=account).volume == D("0.4")
    account.refresh_from_db()
    assert account.margin_reserved == 0


def test_a_good_till_date_order_carries_its_expire_time_and_expires_at_the_lp(lp, a_book):
    sim, session = lp()
    account = a_book(session)
    expires_at = timezone.now() + timedelta(seconds=2)
    order = limit(account, "1.00000", time_in_force="gtd", expires_at=expires_at)
    fix_order = wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.NEW).first())
    assert (fix_order.time_in_force, fix_order.expire_time) == ("6", expires_at)
    # FIX 4.4 carries milliseconds: ExpireTime is the expiry to the millisecond
    expected_ns = int(expires_at.timestamp()) * 1_000_000_000 + expires_at.microsecond // 1000 * 1_000_000
    assert sim.orders[str(order.pk)].expire_ns == expected_ns
    assert timezone.now() < expires_at  # still working at the LP until then

    fix_order = fix_order_done(order.pk)
    assert fix_order.state == FixOrderState.EXPIRED and fix_order.done_at >= expires_at
    order.refresh_from_db()
    assert (order.status, order.close_reason, order.margin) == (OrderStatus.EXPIRED, "expiry", 0)
    account.refresh_from_db()
    assert account.margin_reserved == 0
    assert not Position.objects.filter(account=account).exists()


def test_the_lp_simulator_rejects_a_good_till_date_order_without_a_future_expire_time(lp, a_book):
    sim, _session = lp()
    body = [(35, "D"), (55, "EUR/USD"), (54, "1"), (38, "1000"), (40, "2"), (44, "1.0"), (59, "6")]
    sim.on_new_order(wire.SOH.join(f"{t}={v}" for t, v in [(11, "gtd-none"), *body]) + wire.SOH)
    past = [(126, "20260101-00:00:00.000")]
    sim.on_new_order(wire.SOH.join(f"{t}={v}" for t, v in [(11, "gtd-past"), *body, *past]) + wire.SOH)
    assert sim.orders["gtd-none"].status == sim.orders["gtd-past"].status == "8"


def test_a_routed_order_the_lp_never_got_is_cancelled_at_once_and_never_sent(make_session, a_book):
    session = make_session(free_port(), role="trading", venue=None)  # nobody listens: nothing is sent
    account = a_book(session)

    unqueued = limit(account, "1.00000")  # runfix has not picked it up yet: no FIX order
    queued = limit(account, "1.00000")
    fix_order = fix_order_route(order=queued)  # in the outbox, not claimed for sending
    assert fix_order is not None and fix_order.state == FixOrderState.PENDING

    for order in (unqueued, queued):
        cancelled = order_cancel(order=order)
        assert (cancelled.status, cancelled.close_reason, cancelled.margin) == ("cancelled", "client", 0)
        assert cancelled.close_text == "cancelled before it was sent to the LP"
    assert fix_order_route(order=unqueued) is None
    assert not FixOrder.objects.filter(order=unqueued).exists()
    fix_order.refresh_from_db()
    assert (fix_order.state, fix_order.settled) == (FixOrderState.CANCELLED, True)
    assert fix_orders_claim(session_id=session.pk, max_age_s=60) == []
    account.refresh_from_db()
    assert account.margin_reserved == 0
    with pytest.raises(ServiceError) as again:
        order_cancel(order=queued)
    assert again.value.code == "order_not_pending"
    assert ledger_problems() == []


def test_a_client_cancels_a_working_a_book_order_through_the_api_and_the_lp_ends_it(lp, a_book):
    _sim, session = lp()
    account = a_book(session)
    order = limit(account, "1.00000")
    wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.NEW).first())
    api = APIClient()
    api.force_authenticate(account.owner)
    order_url = f"/api/v1/accounts/{account.number}/orders/{order.pk}"
    url = f"{order_url}/cancel"

    asked = api.post(url)
    assert asked.status_code == 202 and asked.json()["status"] == "routed"

    fix_order = fix_order_done(order.pk)
    assert fix_order.state == FixOrderState.CANCELLED
    assert FixOrderRequest.objects.get(fix_order=fix_order).reason == "client"
    assert api.get(order_url).json()["status"] == "cancelled"  # what a client polling after the 202 sees
    order.refresh_from_db()
    assert (order.status, order.close_reason, order.margin) == (OrderStatus.CANCELLED, "client", 0)
    gone = api.post(url)
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "order_not_pending"


def test_a_cancel_racing_the_route_and_send_either_stops_the_order_or_asks_the_lp(make_session, a_book):
    """Client cancels against runfix's route-and-claim, in real threads: an order is never both
    cancelled for the client and sent to the LP without a cancel request following it."""
    session = make_session(free_port(), role="trading", venue=None)
    account = a_book(session)
    orders = [limit(account, "1.00000") for _ in range(21)]

    def route_and_send(order):
        barrier.wait()
        try:
            fix_order_route(order=order)
            fix_orders_claim(session_id=session.pk, max_age_s=60)
        finally:
            connection.close()

    def cancel(order, delay_s):
        barrier.wait()
        time.sleep(delay_s)  # from before the route to after the send, across the iterations
        try:
            order_cancel(order=order)
        finally:
            connection.close()

    # The cancels' delays run from none to twice a route-and-send on this machine (the first order's,
    # with no cancel racing it): the later ones come after the send, whatever the machine's speed.
    started, barrier = time.perf_counter(), threading.Barrier(1)
    route_and_send(orders.pop())
    step, barrier = 2 * (time.perf_counter() - started) / len(orders), threading.Barrier(2)
    outcomes = set()
    for i, order in enumerate(orders):
        threads = [
            threading.Thread(target=route_and_send, args=(order,)),
            threading.Thread(target=cancel, args=(order, i * step)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        order.refresh_from_db()
        fix_order = FixOrder.objects.filter(order=order).first()
        sent = fix_order is not None and fix_order.sent_at is not None
        if order.status == OrderStatus.CANCELLED:
            assert not sent and order.margin == 0
            outcomes.add("stopped")
        else:
            assert order.status == OrderStatus.ROUTED and sent
            assert FixOrderRequest.objects.get(fix_order=fix_order).kind == "cancel"
            outcomes.add("asked")
    account.refresh_from_db()
    assert account.margin_reserved == sum(o.margin for o in Order.objects.filter(status=OrderStatus.ROUTED))
    assert outcomes == {"stopped", "asked"}  # the delays spread the cancels across both sides
    assert ledger_problems() == []


def test_a_good_till_date_order_expiring_in_the_outbox_ends_expired_and_is_never_sent(make_session, a_book):
    session = make_session(free_port(), role="trading", venue=None)
    account = a_book(session)
    order = limit(account, "1.00000", time_in_force="gtd", expires_at=timezone.now() + timedelta(seconds=1))
    fix_order_route(order=order)
    time.sleep(1.1)

    assert fix_orders_claim(session_id=session.pk, max_age_s=60) == []
    fix_order = FixOrder.objects.get(order=order)
    assert (fix_order.state, fix_order.text, fix_order.sent_at) == (
        "expired",
        "expired before it was sent",
        None,
    )
    order.refresh_from_db()
    assert (order.status, order.close_reason, order.margin) == (OrderStatus.EXPIRED, "expiry", 0)


def test_a_replace_of_a_good_till_date_order_carries_its_expire_time(peer, make_session, run_engine, a_book):
    expires_at = timezone.now() + timedelta(hours=1)
    _account, _order, new_order, fix_order = resting_at_peer(
        peer, make_session, run_engine, a_book, "L8", time_in_force="gtd", expires_at=expires_at
    )
    assert (new_order["59"], new_order["126"]) == ("6", expires_at.strftime("%Y%m%d-%H:%M:%S.%f")[:-3])

    fix_order_replace_request(fix_order=fix_order, price=D("1.01000"))
    replace = peer.expect("G")
    assert (replace["44"], replace["59"], replace["126"]) == ("1.01", "6", new_order["126"])


def test_client_cancels_racing_the_stale_order_rejection_neither_deadlock_nor_end_an_order_twice(
    make_session, a_book
):
    session = make_session(free_port(), role="trading", venue=None)
    account = a_book(session)
    orders = [limit(account, "1.00000") for _ in range(12)]
    for order in orders:
        fix_order_route(order=order)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(work):
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # a deadlock victim, say
            errors.append(exc)
        finally:
            connection.close()

    def cancel_all():
        for order in orders:
            with contextlib.suppress(ServiceError):  # already ended as stale
                order_cancel(order=order)

    threads = [
        threading.Thread(target=run, args=(lambda: fix_orders_claim(session_id=session.pk, max_age_s=0),)),
        threading.Thread(target=run, args=(cancel_all,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ends = {o.status for o in Order.objects.filter(pk__in=[o.pk for o in orders])}
    assert ends <= {OrderStatus.CANCELLED, OrderStatus.REJECTED}
    assert not FixOrder.objects.filter(sent_at__isnull=False).exists()
    account.refresh_from_db()
    assert account.margin_reserved == 0
    assert ledger_problems() == []
