"""Sessions that recover: what a gap fill covered is re-issued where that is safe (never a new
order), unanswered cancels and cancel/replaces are queried then retried or given up, refused logons
back off. Against runfix's engine and the scripted raw-socket acceptor (tests/fakes/fix_peer.py)."""

import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest

from brokerage.models import OrderStatus
from fix.models import FixOrder, FixOrderRequest, FixOrderState, RequestState
from fix.selectors import fix_session_state
from fix.services import REQUEST_MAX_ATTEMPTS, fix_order_cancel_request
from tests.fakes.fix_peer import FixPeer
from tests.support.waiting import wait_until

from .conftest import PASSWORD
from .test_orders import fix_order_done, limit

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal


def logged_on(session) -> bool:
    state = fix_session_state(session=session)
    return bool(state and state["logged_on"])


def resting(peer: FixPeer, make_session, run_engine, a_book, lp_order_id: str, **desk):
    """A buy limit far below the market, acknowledged New by the scripted peer."""
    account = a_book(make_session(peer.port, role="trading", venue=None))
    run_engine(desk=desk)
    peer.expect("A")
    order = limit(account, "1.00000")
    peer.expect("D")
    ack = [(37, lp_order_id), (11, str(order.pk)), (17, f"N-{lp_order_id}"), (150, "0"), (39, "0")]
    peer.send("8", [*ack, (55, "EURUSD"), (54, "1"), (151, "100000"), (14, "0"), (6, "0")])
    fix_order = wait_until(lambda: FixOrder.objects.filter(order=order, state=FixOrderState.NEW).first())
    return order, fix_order


def status_answer(order_id: int, lp_order_id: str, ord_status: str, cum: str = "0", avg: str = "0"):
    leaves = str(100000 - int(cum)) if ord_status in ("0", "1") else "0"
    fields = [(37, lp_order_id), (11, str(order_id)), (17, f"S-{time.monotonic_ns()}"), (150, "I")]
    fields += [(39, ord_status), (55, "EURUSD"), (54, "1"), (38, "100000"), (40, "2"), (44, "1")]
    return [*fields, (151, leaves), (14, cum), (6, avg)]


# -- gap fills ------------------------------------------------------------------------------------
def test_subscriptions_a_gap_fill_covered_are_made_again_and_the_password_stays_off_disk(
    peer, make_session, run_engine, store_dir
):
    session = make_session(peer.port)
    engine = run_engine()
    logon = peer.expect("A")
    first = [peer.expect("V"), peer.expect("V")]
    wait_until(lambda: logged_on(session))
    peer.drain()

    peer.send("2", [(7, str(logon.seq)), (16, "0")])  # everything since (and with) our Logon
    gap_fill = peer.expect("4")
    assert gap_fill["123"] == "Y" and gap_fill["43"] == "Y"
    assert gap_fill.seq == logon.seq and int(gap_fill["36"]) > max(v.seq for v in first)
    again = [peer.expect("V"), peer.expect("V")]
    assert all(v.seq >= int(gap_fill["36"]) and v["263"] == "1" for v in again)
    assert sorted(v["55"] for v in again) == sorted(v["55"] for v in first)
    assert not {v["262"] for v in again} & {v["262"] for v in first}  # new MDReqIDs
    assert not [m for m in peer.drain() if m.type in ("A", "D")]  # nothing else comes back

    handler = engine.handler_named(session.name)
    assert handler is not None
    assert handler.state.subscribed == {v["55"]: v["262"] for v in again}
    for path in Path(store_dir).rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_cancel_a_gap_fill_covered_is_sent_again_and_the_lp_ends_the_order(
    peer, make_session, run_engine, a_book
):
    order, fix_order = resting(peer, make_session, run_engine, a_book, "R1")
    request = fix_order_cancel_request(fix_order=fix_order)
    cancel = peer.expect("F")
    assert "97" not in cancel

    peer.send("2", [(7, str(cancel.seq)), (16, "0")])
    gap_fill = peer.expect("4")
    again = peer.expect("F")
    assert again.seq >= int(gap_fill["36"]) > cancel.seq
    assert (again["11"], again["41"], again["37"], again["97"]) == (
        request.cl_ord_id,
        str(order.pk),
        "R1",
        "Y",
    )

    done = [(37, "R1"), (11, request.cl_ord_id), (41, str(order.pk)), (17, "C-R1"), (150, "4"), (39, "4")]
    peer.send("8", [*done, (55, "EURUSD"), (54, "1"), (151, "0"), (14, "0"), (6, "0")])
    fix_order_done(order.pk)
    request.refresh_from_db()
    order.refresh_from_db()
    assert (request.state, order.status) == (RequestState.ACCEPTED, OrderStatus.CANCELLED)


def test_a_new_order_a_gap_fill_covered_is_asked_about_never_resent_and_ends_rejected(
    peer, make_session, run_engine, a_book
):
    account = a_book(make_session(peer.port, role="trading", venue=None))
    run_engine()  # the default acknowledgement timeout (5 s) is not what asks here
    peer.expect("A")
    order = limit(account, "1.00000")
    sent = peer.expect("D")

    peer.send("2", [(7, str(sent.seq)), (16, "0")])
    peer.expect("4")
    status = peer.expect("H", timeout=2)
    assert status["11"] == str(order.pk)
    unknown = [(37, "NONE"), (11, str(order.pk)), (17, "S-u"), (150, "I"), (39, "8"), (103, "5")]
    peer.send("8", [*unknown, (55, "EURUSD"), (54, "1"), (151, "0"), (14, "0"), (6, "0")])
    assert fix_order_done(order.pk).state == FixOrderState.REJECTED
    assert not [m for m in peer.drain() if m.type == "D"]


# -- unanswered cancels -----------------------------------------------------------------------------
def test_an_unanswered_cancel_is_queried_retried_then_given_up_and_blocks_no_later_cancel(
    peer, make_session, run_engine, a_book
):
    order, fix_order = resting(peer, make_session, run_engine, a_book, "R2", ack_timeout_s=0.5)
    request = fix_order_cancel_request(fix_order=fix_order)
    sends = [peer.expect("F")]
    for attempt in range(1, REQUEST_MAX_ATTEMPTS + 1):
        status = peer.expect("H", timeout=4)  # no answer within the timeout: what does the LP have?
        assert (status["11"], status["37"]) == (str(order.pk), "R2")
        peer.send("8", status_answer(order.pk, "R2", "0"))  # working, and no sign of the cancel
        if attempt < REQUEST_MAX_ATTEMPTS:
            sends.append(peer.expect("F", timeout=4))
    assert [(f["11"], f.get("97")) for f in sends] == [(request.cl_ord_id, None)] + [
        (request.cl_ord_id, "Y")
    ] * (REQUEST_MAX_ATTEMPTS - 1)

    request = wait_until(
        lambda: FixOrderRequest.objects.filter(pk=request.pk, state=RequestState.REJECTED).first()
    )
    assert request.attempts == REQUEST_MAX_ATTEMPTS and "never got it" in request.text
    fix_order.refresh_from_db()
    assert fix_order.state == FixOrderState.NEW

    later = fix_order_cancel_request(fix_order=fix_order)  # a new cancel is not blocked
    assert later.pk != request.pk
    assert peer.expect("F", timeout=4)["11"] == later.cl_ord_id


def test_an_unanswered_cancel_of_an_order_filled_meanwhile_ends_with_the_fill(
    peer, make_session, run_engine, a_book
):
    order, fix_order = resting(peer, make_session, run_engine, a_book, "R3", ack_timeout_s=0.5)
    request = fix_order_cancel_request(fix_order=fix_order)
    peer.expect("F")
    peer.expect("H", timeout=4)
    peer.send("8", status_answer(order.pk, "R3", "2", cum="100000", avg="1.00000"))

    assert fix_order_done(order.pk).state == FixOrderState.FILLED
    request.refresh_from_db()
    assert request.state == RequestState.REJECTED and "final" in request.text
    time.sleep(1.2)  # over two timeouts: the cancel is over, never sent again
    assert not [m for m in peer.drain() if m.type == "F"]


def test_an_unanswered_cancel_whose_status_query_is_unanswered_too_is_sent_again(
    peer, make_session, run_engine, a_book
):
    order, fix_order = resting(peer, make_session, run_engine, a_book, "R4", ack_timeout_s=0.5)
    request = fix_order_cancel_request(fix_order=fix_order)
    peer.expect("F")
    peer.expect("H", timeout=4)  # and no answer to that either
    again = peer.expect("F", timeout=4)
    assert (again["11"], again["97"]) == (request.cl_ord_id, "Y")
    done = [(37, "R4"), (11, request.cl_ord_id), (41, str(order.pk)), (17, "C-R4"), (150, "4"), (39, "4")]
    peer.send("8", [*done, (55, "EURUSD"), (54, "1"), (151, "0"), (14, "0"), (6, "0")])
    assert fix_order_done(order.pk).state == FixOrderState.CANCELLED


# -- refused logons ---------------------------------------------------------------------------------
def test_a_refused_logon_backs_off_exponentially_is_logged_once_and_raised_as_an_event(
    peer, make_session, run_engine, caplog, system_events
):
    caplog.set_level(logging.WARNING, logger="fix.engine")
    session = make_session(peer.port, role="trading", venue=None, reconnect_s=1)
    peer.refuse_logon = "invalid password"
    run_engine()
    wait_until(lambda: len(peer.logon_times) >= 4, timeout_s=20)
    gaps = [b - a for a, b in zip(peer.logon_times, peer.logon_times[1:], strict=False)]
    # ReconnectInterval 1 s doubled per refusal (1, 2, 4 s), each plus up to one reconnect tick
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9, gaps
    assert gaps[2] > gaps[0] + 2
    state = fix_session_state(session=session) or {}
    assert int(str(state["logon_refusals"])) >= 3 and not state["logged_on"]

    refused = [r for r in caplog.records if "logon refused" in r.getMessage()]
    assert len(refused) == 1 and "invalid password" in refused[0].getMessage()
    events = [e for e in system_events if e["subject"] == session.name]
    assert [(e["kind"], e["text"]) for e in events] == [("fix.logon_refused", "refused: invalid password")]

    peer.refuse_logon = ""
    wait_until(lambda: logged_on(session), timeout_s=20)
    events = [e for e in system_events if e["subject"] == session.name]
    assert [e["kind"] for e in events] == ["fix.logon_refused", "fix.logon"]
    refusals = int(events[1]["text"].removeprefix("logon #1, accepted after ").removesuffix(" refused"))
    assert refusals >= 3
    assert (fix_session_state(session=session) or {})["logon_refusals"] == 0


def test_a_cancel_the_lp_shows_pending_is_asked_about_again_only_after_another_timeout(
    peer, make_session, run_engine, a_book
):
    order, fix_order = resting(peer, make_session, run_engine, a_book, "R5", ack_timeout_s=0.8)
    request = fix_order_cancel_request(fix_order=fix_order)
    peer.expect("F")
    peer.expect("H", timeout=4)
    answered = time.monotonic()
    peer.send("8", status_answer(order.pk, "R5", "6"))  # pending cancel
    second = peer.expect("H", timeout=4)
    assert time.monotonic() - answered >= 0.7 and second["11"] == str(order.pk)
    assert not [m for m in peer.drain() if m.type == "F"]  # not sent again meanwhile
    request.refresh_from_db()
    assert (request.state, request.attempts) == (RequestState.SENT, 1)
