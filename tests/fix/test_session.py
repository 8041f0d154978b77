"""Session level behaviour of runfix's engine against a scripted raw-socket acceptor."""

import re
import time
from pathlib import Path

import pytest

from fix.models import CommandAction, FixMessage
from fix.selectors import fix_session_state
from fix.services import fix_command_request
from tests.support.waiting import wait_until

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def logged_on(session) -> bool:
    state = fix_session_state(session=session)
    return bool(state and state["logged_on"])


def test_it_logs_on_with_credentials_and_never_stores_the_password(peer, make_session, run_engine, store_dir):
    session = make_session(peer.port)
    engine = run_engine()

    logon = peer.expect("A")
    assert (logon["553"], logon["554"], logon["108"], logon["98"]) == ("livermore", PASSWORD, "1", "0")
    assert logon["49"] == "LIVERMORE" and logon["56"] == "PEER"
    wait_until(lambda: logged_on(session))

    engine.stop()
    peer.expect("5")
    logged = wait_until(
        lambda: list(FixMessage.objects.filter(session=session, msg_type="A", direction="out"))
    )
    assert "554=***" in logged[0].raw and "553=livermore" in logged[0].raw
    assert not FixMessage.objects.filter(raw__contains=PASSWORD).exists()
    for path in Path(store_dir).rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert oct(store_dir.stat().st_mode & 0o777) == "0o700"


def test_it_logs_out_when_the_peer_logs_out_and_logs_on_again(peer, make_session, run_engine):
    session = make_session(peer.port)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))

    peer.send("5", [(58, "maintenance")])
    peer.expect("5")
    wait_until(lambda: (fix_session_state(session=session) or {}).get("last_logout_text") == "maintenance")

    peer.disconnect()
    second = peer.expect("A", timeout=6)
    assert int(second["34"]) > 1  # sequence numbers continue across the reconnect
    wait_until(lambda: logged_on(session))


def test_a_sequence_gap_from_the_peer_triggers_a_resend_request(peer, make_session, run_engine):
    session = make_session(peer.port, role="trading", venue=None)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))

    peer.send("0", seq=peer.next_out + 3)  # skips three sequence numbers
    resend = peer.expect("2")
    assert (resend["7"], resend["16"]) == ("2", "0")


def test_a_silent_peer_gets_a_test_request_then_is_dropped_and_reconnected(peer, make_session, run_engine):
    session = make_session(peer.port, role="trading", venue=None)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))

    peer.auto_heartbeat = False  # no Heartbeat, no answer to TestRequest: a dead line
    test_request = peer.expect("1", timeout=4)
    assert test_request["112"]
    connections = peer.connections
    again = peer.expect("A", timeout=8)
    assert peer.connections == connections + 1
    assert int(again["34"]) > int(test_request["34"])


def test_operator_disconnect_keeps_the_session_down_until_connect(peer, make_session, run_engine):
    session = make_session(peer.port, role="trading", venue=None)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))

    fix_command_request(session=session, action=CommandAction.DISCONNECT)
    assert peer.expect("5")["58"] == "operator disconnect"
    wait_until(lambda: not logged_on(session))
    time.sleep(2.5)  # over two reconnect intervals
    assert not [m for m in peer.drain() if m.type == "A"]

    fix_command_request(session=session, action=CommandAction.CONNECT)
    peer.expect("A", timeout=5)
    wait_until(lambda: logged_on(session))
    assert session.commands.filter(done_at__isnull=True).count() == 0


def test_operator_reset_starts_both_sides_at_one_with_reset_flag(peer, make_session, run_engine):
    session = make_session(peer.port, role="trading", venue=None)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))
    for _ in range(3):
        peer.send("0")
    wait_until(lambda: (fix_session_state(session=session) or {}).get("next_in") == 5)

    fix_command_request(session=session, action=CommandAction.RESET_SEQNUMS)
    logon = peer.expect("A", timeout=6)
    assert (logon["34"], logon["141"]) == ("1", "Y")
    wait_until(lambda: logged_on(session))
    assert peer.next_out == 2  # the peer restarted at 1 too (its Logon was 1)
    wait_until(
        lambda: (
            (s := fix_session_state(session=session))
            and (s["next_in"], s["next_out"]) == (peer.next_out, peer.next_in)
        )
    )


def test_fix_4_4_timestamps_carry_milliseconds_no_finer(peer, make_session, run_engine):
    session = make_session(peer.port)
    run_engine()
    logon = peer.expect("A")
    subscribe = peer.expect("V")
    wait_until(lambda: logged_on(session))
    stamp = re.compile(r"^\d{8}-\d\d:\d\d:\d\d\.\d{3}$")
    assert stamp.match(logon["52"]) and stamp.match(subscribe["52"])


@pytest.mark.parametrize("tag", ["5555", "4999"])
def test_an_undefined_field_is_answered_with_a_session_reject(peer, make_session, run_engine, tag):
    session = make_session(peer.port, role="trading", venue=None)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))

    seq = peer.send("0", [(int(tag), "surprise")])
    reject = peer.expect("3")
    assert (reject["45"], reject["371"]) == (str(seq), tag)
    assert reject["373"] in ("0", "2")  # invalid tag number / tag not defined for this message type


def test_a_session_that_relaxes_validation_accepts_an_undefined_field(peer, make_session, run_engine):
    session = make_session(peer.port, role="trading", venue=None, relax_field_validation=True)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))

    peer.send("0", [(5555, "surprise"), (4999, "also")])
    peer.send("1", [(112, "after")])
    assert peer.expect("0", where={"112": "after"})
    assert not [m for m in peer.drain() if m.type == "3"]


def test_logon_logout_a_refused_logon_and_a_sequence_reset_are_system_events(
    peer, make_session, run_engine, system_events
):
    session = make_session(peer.port)
    run_engine()
    peer.expect("A")
    wait_until(lambda: logged_on(session))
    wait_until(lambda: [e for e in system_events if e["kind"] == "fix.logon"])

    new_seq = peer.next_out + 5
    peer.send("4", [(36, str(new_seq))])  # reset mode: no GapFillFlag
    peer.next_out = new_seq
    wait_until(lambda: [e for e in system_events if e["kind"] == "fix.sequence_reset"])

    peer.auto_logon = False
    peer.send("5", [(58, "maintenance")])
    peer.expect("5")
    peer.disconnect()
    peer.expect("A", timeout=6)
    peer.send("5", [(58, "invalid credentials")])
    wait_until(lambda: [e for e in system_events if e["kind"] == "fix.logon_refused"])

    by_kind = {e["kind"]: e for e in system_events}
    assert by_kind["fix.logon"]["subject"] == session.name
    assert by_kind["fix.logout"]["text"] == "logged out: maintenance"
    assert by_kind["fix.logon_refused"]["text"] == "refused: invalid credentials"
    assert by_kind["fix.sequence_reset"]["text"] == f"new inbound seq {new_seq} (gap fill N)"
    assert all(PASSWORD not in e["text"] for e in system_events)
