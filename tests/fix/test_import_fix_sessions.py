"""manage.py import_fix_sessions on a sample of the old gateway's sessions.json (legacy_data/)."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from fix.models import FixRole, FixSession
from marketdata.models import VenueKind

pytestmark = pytest.mark.django_db

FILE = Path(__file__).parent / "legacy_data" / "sessions.json"
SECRETS = ("md-plain-text-secret", "tr-plain-text-secret", "proxy-secret", "broken-secret")


def run() -> str:
    out = StringIO()
    call_command("import_fix_sessions", str(FILE), stdout=out, stderr=StringIO())
    return out.getvalue()


def test_sessions_are_created_disabled_with_their_passwords_encrypted() -> None:
    out = run()
    prices, orders = FixSession.objects.get(name="lp-prices"), FixSession.objects.get(name="lp-orders")
    assert (prices.role, prices.host, prices.port, prices.tls, prices.reconnect_s) == (
        FixRole.MARKET_DATA,
        "fix.lp.example",
        9876,
        True,
        10,
    )
    assert prices.venue is not None and (prices.venue.kind, prices.venue.enabled) == (VenueKind.FIX, False)
    assert (orders.role, orders.account, orders.heartbeat_s, orders.sender_comp_id) == (
        FixRole.TRADING,
        "ACC-77",
        20,
        "DESK_TR",
    )
    assert not prices.enabled and not orders.enabled
    assert orders.password == "tr-plain-text-secret"
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM fix_fixsession WHERE name = 'lp-orders'")
        assert "tr-plain-text-secret" not in cursor.fetchone()[0]
    assert "sessions: 2 created (disabled), 0 already present, 1 refused" in out
    assert "note: lp-orders: used a proxy" in out
    assert "error: broken: port:" in out
    assert not any(secret in out for secret in SECRETS)


def test_a_second_run_adds_nothing() -> None:
    run()
    assert "sessions: 0 created (disabled), 2 already present, 1 refused" in run()
    assert FixSession.objects.count() == 2
