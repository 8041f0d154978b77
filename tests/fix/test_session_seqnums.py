"""Cut-over from the old gateway: an operator sets a disabled session's next sender and target
sequence numbers in the admin, and runfix starts the session from them."""

from typing import Any

import pytest
from django.test import Client

from fix.models import FixSession
from fix.selectors import fix_session_state
from fix.services import fix_session_seqnums_set
from tests.support.waiting import wait_until
from users.models import AuditLog

URL = "/admin/fix/fixsession/"


def post(client: Client, session: FixSession, **form: str) -> Any:
    return client.post(URL, {"action": "set_seqnums", "_selected_action": [session.pk], **form}, follow=True)


@pytest.mark.django_db
def test_the_admin_sets_a_disabled_sessions_next_numbers(admin_client: Client, make_session: Any) -> None:
    session = make_session(9999, enabled=False)
    form = post(admin_client, session)
    assert b"Next sender MsgSeqNum" in form.content
    post(admin_client, session, confirmed="yes", sender="0", target="17")
    session.refresh_from_db()
    assert session.next_sender_seq is None  # 0 is refused by the form
    post(admin_client, session, confirmed="yes", sender="42", target="17")
    session.refresh_from_db()
    assert (session.next_sender_seq, session.next_target_seq) == (42, 17)
    assert AuditLog.objects.filter(
        action="fix.session_seqnums_set", details={"sender": 42, "target": 17}
    ).exists()


@pytest.mark.django_db
def test_an_enabled_session_is_refused(admin_client: Client, make_session: Any) -> None:
    session = make_session(9999, enabled=True)
    response = post(admin_client, session, confirmed="yes", sender="42", target="17")
    assert b"is enabled: disable it first" in response.content
    session.refresh_from_db()
    assert session.next_sender_seq is None


@pytest.mark.django_db(transaction=True)
def test_runfix_starts_the_session_from_the_numbers_set(
    peer: Any, make_session: Any, run_engine: Any, operator: Any
) -> None:
    session = make_session(peer.port, role="trading", venue=None, enabled=False)
    fix_session_seqnums_set(session=session, sender=42, target=17, user=operator)
    FixSession.objects.filter(pk=session.pk).update(enabled=True)
    peer.next_out = 17
    run_engine()
    logon = peer.expect("A")
    assert logon["34"] == "42"
    wait_until(lambda: (fix_session_state(session=session) or {}).get("logged_on"))
    wait_until(lambda: (fix_session_state(session=session) or {}).get("next_in") == 18)
    session.refresh_from_db()
    assert (session.next_sender_seq, session.next_target_seq) == (None, None)
