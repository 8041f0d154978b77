"""Routing rules, the operator console pages, and the message log pruning."""

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from brokerage.models import Order, OrderStatus
from brokerage.services import order_submit
from fix.channels import state_key
from fix.models import (
    CommandAction,
    FixCommand,
    FixMessage,
    FixOrder,
    FixSession,
    PositionCheck,
    RoutingAction,
    RoutingRule,
)
from fix.selectors import fix_session_configs, routing_rule_match
from fix.services import fix_messages_prune, fix_order_route, fix_orders_claim
from kernel.errors import ServiceError
from kernel.redis import sync_client
from marketdata.models import Venue, VenueKind
from marketdata.publisher import ticker_key
from marketdata.quotes import Quote, SelectedQuote

from .conftest import PASSWORD

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session(make_session):
    return make_session(9, role="trading", venue=None)


def test_the_first_matching_rule_by_priority_wins(session, a_book):
    account = a_book(session)  # adds "all to the LP" at priority 10
    gold = RoutingRule.objects.create(
        priority=5, name="gold B", instrument_pattern="XAU*", action=RoutingAction.B_BOOK
    )
    big = RoutingRule.objects.create(
        priority=1, name="big to LP", volume_min=D(10), action=RoutingAction.A_BOOK, session=session
    )
    other = RoutingRule.objects.create(
        priority=0, name="other group", group=None, account=None, instrument_pattern="GBP*", action="B"
    )

    def match(symbol: str, volume: int) -> RoutingRule | None:
        return routing_rule_match(
            account_id=account.pk, group_id=account.group_id, symbol=symbol, volume=D(volume)
        )

    assert match("XAUUSD", 1) == gold
    assert match("XAUUSD", 10) == big
    assert match("GBPUSD", 1) == other
    assert match("EURUSD", 1).name == "all to the LP"
    lp_rule = RoutingRule.objects.get(name="all to the LP")  # saved, as the admin saves: the version moves
    lp_rule.account, lp_rule.group, lp_rule.enabled = None, None, False
    lp_rule.save()
    assert match("EURUSD", 1) is None


def test_orders_read_the_rules_once_per_routing_version(session, a_book):
    """Every order is routed, and the rules change only when an operator edits them: they are kept per
    process under their version, and a saved or deleted rule holds from the next order on."""
    account = a_book(session)
    RoutingRule.objects.all().delete()
    RoutingRule.objects.create(priority=1, name="keep it", group=account.group, action=RoutingAction.B_BOOK)
    order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))  # reads and keeps them
    seen: list[str] = []

    def wrapper(execute, query, params, many, context):
        seen.append(query)
        return execute(query, params, many, context)

    with connection.execute_wrapper(wrapper):
        order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert order.book == "B"
    assert not [q for q in seen if "fix_routingrule" in q]

    rule = RoutingRule.objects.get(name="keep it")
    rule.action, rule.session = RoutingAction.A_BOOK, session
    rule.save()
    assert order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1")).book == "A"
    rule.delete()
    assert order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1")).book == "B"


def test_an_order_no_rule_routes_and_one_a_b_book_rule_matches_fill_internally_at_submit(session, a_book):
    account = a_book(session)
    RoutingRule.objects.all().delete()
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert (order.status, order.book, order.fill_price) == (
        OrderStatus.FILLED,
        "B",
        D("1.08512") + D("0.00002"),
    )

    RoutingRule.objects.create(priority=1, name="keep it", group=account.group, action=RoutingAction.B_BOOK)
    RoutingRule.objects.create(priority=2, name="to the LP", action=RoutingAction.A_BOOK, session=session)
    order = order_submit(account=account, symbol="EURUSD", side="sell", volume=D("0.1"))
    assert (order.status, order.book, order.fill_price) == (
        OrderStatus.FILLED,
        "B",
        D("1.08500") - D("0.00002"),
    )
    assert not FixOrder.objects.exists()


def test_an_a_book_rule_to_a_session_that_cannot_trade_refuses_the_order(session, a_book):
    account = a_book(session)
    session.enabled = False
    session.save()
    with pytest.raises(ServiceError) as refused:
        order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert (refused.value.code, refused.value.status_code) == ("no_route", 503)
    assert not Order.objects.exists()


def test_an_order_whose_session_stopped_trading_before_runfix_routed_it_is_rejected(session, a_book):
    account = a_book(session)
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    FixSession.objects.filter(pk=session.pk).update(enabled=False)

    assert fix_order_route(order=order) is None
    order.refresh_from_db()
    assert (order.status, order.close_reason, order.margin) == (OrderStatus.REJECTED, "lp", 0)
    assert order.close_text == "FIX session 'peer' cannot trade"
    account.refresh_from_db()
    assert account.margin_reserved == 0


def test_routing_an_order_twice_creates_one_fix_order(session, a_book):
    account = a_book(session)
    order = order_submit(account=account, symbol="EURUSD", side="sell", volume=D("0.2"))
    first = fix_order_route(order=order)
    assert first is not None and fix_order_route(order=order) == first
    assert (first.cl_ord_id, first.quantity, first.side, first.time_in_force) == (
        str(order.pk),
        20000,
        "2",
        "3",
    )


def test_the_session_admin_never_shows_the_password_and_keeps_it_when_left_empty(admin_client, session):
    sync_client().set(
        state_key(session.name),
        '{"logged_on": true, "next_in": 7, "next_out": 9, "last_heartbeat_ms": 0}',
        ex=5,
    )
    PositionCheck.objects.create(
        session=session, request_id="p1", symbol="EUR/USD", ours=0, theirs=5, matched=False
    )
    page = admin_client.get(reverse("admin:fix_fixsession_change", args=[session.pk]))
    assert page.status_code == 200 and PASSWORD not in page.content.decode()
    assert "LOGGED ON" in page.content.decode() and "MISMATCH" in page.content.decode()
    listing = admin_client.get(reverse("admin:fix_fixsession_changelist")).content.decode()
    assert ">7<" in listing and ">9<" in listing and "1 MISMATCH" in listing

    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k in form.fields}
    data.update({"new_password": "", "start_time": "", "end_time": "", "venue": ""})
    response = admin_client.post(reverse("admin:fix_fixsession_change", args=[session.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    session.refresh_from_db()
    assert session.password == PASSWORD


def test_session_actions_ask_for_confirmation_then_queue_a_command(admin_client, session):
    url = reverse("admin:fix_fixsession_changelist")
    first = admin_client.post(url, {"action": "reset_seqnums", "_selected_action": [session.pk]})
    assert first.status_code == 200 and b"are you sure?" in first.content
    assert not FixCommand.objects.exists()

    admin_client.post(url, {"action": "reset_seqnums", "_selected_action": [session.pk], "confirmed": "yes"})
    command = FixCommand.objects.get()
    assert (command.session, command.action, command.done_at) == (session, CommandAction.RESET_SEQNUMS, None)
    assert command.requested_by is not None


def test_the_routing_preview_names_the_matching_rule(admin_client, session, a_book):
    account = a_book(session)
    url = reverse("admin:fix_routingrule_preview")
    page = admin_client.get(url, {"account": account.number, "symbol": "eurusd", "volume": "1"})
    assert "all to the LP" in page.content.decode()
    page = admin_client.get(url, {"account": 999999, "symbol": "EURUSD", "volume": "1"})
    assert "No such account" in page.content.decode()


def test_the_message_viewer_lists_redacted_messages_read_only(admin_client, session):
    FixMessage.objects.create(session=session, direction="out", msg_type="A", seq=1, raw="35=A|554=***|")
    page = admin_client.get(reverse("admin:fix_fixmessage_changelist"), {"session__id__exact": session.pk})
    assert page.status_code == 200 and "554=***" in page.content.decode()
    assert admin_client.get(reverse("admin:fix_fixmessage_add")).status_code == 403


def test_pruning_keeps_recent_messages_up_to_the_cap(session):
    old = timezone.now() - timedelta(days=10)
    FixMessage.objects.bulk_create(
        [
            FixMessage(session=session, direction="in", msg_type="0", seq=i, raw="", created_at=old)
            for i in range(3)
        ]
        + [FixMessage(session=session, direction="in", msg_type="0", seq=i, raw="") for i in range(3, 8)]
    )
    assert fix_messages_prune(keep_days=7, keep_per_session=3) == 5
    assert sorted(FixMessage.objects.values_list("seq", flat=True)) == [5, 6, 7]


def test_an_order_routed_late_is_judged_stale_from_the_client_order_time(session, a_book):
    account = a_book(session)
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    order.refresh_from_db()
    fix_order = fix_order_route(order=order)

    assert fix_orders_claim(session_id=session.pk, max_age_s=30) == []
    fix_order.refresh_from_db()
    assert (fix_order.state, fix_order.text) == ("rejected", "stale: not sent in time")
    order.refresh_from_db()
    assert order.status == OrderStatus.REJECTED


def test_the_password_comes_from_the_named_environment_variable_when_set(session, monkeypatch):
    assert [c.password for c in fix_session_configs()] == [PASSWORD]
    session.password_env = "LIVERMORE_SECRET_LP_FIX_PASSWORD"
    session.save()
    monkeypatch.setenv("LIVERMORE_SECRET_LP_FIX_PASSWORD", "from-the-environment")
    assert [c.password for c in fix_session_configs()] == ["from-the-environment"]


def test_a_live_deployment_routes_no_order_to_a_simulated_lp(make_session, a_book, fix_venue, settings):
    demo_lp = Venue.objects.create(code="lpdemo", name="LP simulator", kind=VenueKind.FIX, demo=True)
    account = a_book(make_session(9, venue=demo_lp))
    settings.LIVERMORE_DEMO = False
    now = time.time_ns()
    live = Quote("EURUSD", fix_venue.code, D("1.08500"), D("1.08512"), venue_ts=now, recv_ts=now)
    sync_client().set(
        ticker_key("EURUSD"), json.dumps(SelectedQuote("EURUSD", 7, live, True).to_wire()), ex=60
    )
    with pytest.raises(ServiceError) as refused:
        order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert (refused.value.code, refused.value.status_code) == ("no_route", 503)
    assert "whose LP is simulated" in refused.value.message
    assert not Order.objects.exists()

    settings.LIVERMORE_DEMO = True
    order = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert (order.status, order.route) == (OrderStatus.ROUTED, "peer")


def test_the_session_admin_shows_a_logon_back_off_and_offers_relaxed_validation(admin_client, session):
    sync_client().set(
        state_key(session.name),
        '{"logged_on": false, "logon_refusals": 3, "logon_retry_in_s": 12.5, "last_logout_text": "bad pw"}',
        ex=5,
    )
    page = admin_client.get(reverse("admin:fix_fixsession_change", args=[session.pk])).content.decode()
    assert "logon refused 3x, next try in 12.5 s" in page and "last logout: bad pw" in page
    assert 'name="relax_field_validation"' in page
