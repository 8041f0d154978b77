"""The kill switch from the admin (the index panel's one-click switch, the trading state pages) and
the back-office API: who may set and see the states, bad input, and what a client then gets."""

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from brokerage.models import TradingState, TradingStateChange
from marketdata.models import Instrument
from tests.support.users import make_role_user
from users.models import AuditLog, User
from users.roles import DEALER, RISK, VIEWER

from .conftest import QuoteSetter, client_for

pytestmark = pytest.mark.django_db

STATES = "/api/v1/backoffice/trading-states"


@pytest.fixture
def risk(db: None) -> User:
    return make_role_user("rita", RISK)


@pytest.fixture
def viewer(db: None) -> User:
    return make_role_user("victor", VIEWER)


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_risk_role_halts_everything_in_one_click_from_the_admin_index(
    risk: User, alice_account: Any, quotes: QuoteSetter, django_capture_on_commit_callbacks: Any
) -> None:
    page = browser(risk).get(reverse("admin:index"))
    assert b"Trading is active everywhere." in page.content
    assert b'value="halted"' in page.content

    with django_capture_on_commit_callbacks(execute=True):
        response = browser(risk).post(
            reverse("admin:brokerage_tradingstate_switch"), {"state": "halted", "reason": "feed incident"}
        )
    assert response.status_code == 302 and response["Location"] == reverse("admin:index")
    row = TradingState.objects.get(scope="global")
    assert (row.state, row.reason, row.set_by, row.source) == ("halted", "feed incident", risk, "manual")
    assert AuditLog.objects.get(action="trading_state.set").actor == risk

    order = client_for(alice_account.owner).post(
        f"/api/v1/accounts/{alice_account.number}/orders",
        {"symbol": "EURUSD", "side": "buy", "volume": "0.01"},
        format="json",
    )
    assert order.status_code == 409
    assert order.json()["error"]["code"] == "trading_halted"
    assert b"feed incident" in browser(risk).get(reverse("admin:index")).content


def test_the_dealer_and_the_viewer_see_the_states_but_cannot_switch(
    risk: User, viewer: User, switch_global: Any
) -> None:
    switch_global("reduce_only", risk)
    dealer = make_role_user("dora", DEALER)
    for user in (viewer, dealer):
        page = browser(user).get(reverse("admin:index"))
        assert b"Reduce-only" in page.content and b'value="halted"' not in page.content
        url = reverse("admin:brokerage_tradingstate_switch")
        assert browser(user).post(url, {"state": "active"}).status_code == 403
        listing = browser(user).get(reverse("admin:brokerage_tradingstate_changelist"))
        assert listing.status_code == 200 and b"Reduce-only" in listing.content
        assert browser(user).get(reverse("admin:brokerage_tradingstate_add")).status_code == 403
    assert TradingState.objects.get().state == "reduce_only"


@pytest.fixture
def switch_global(django_capture_on_commit_callbacks: Any) -> Any:
    def set_state(state: str, user: User) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            browser(user).post(reverse("admin:brokerage_tradingstate_switch"), {"state": state})

    return set_state


def test_a_state_added_in_the_admin_goes_through_the_service(
    risk: User, quotes: QuoteSetter, system_events: list[Any]
) -> None:
    eurusd = Instrument.objects.get(symbol="EURUSD")
    response = browser(risk).post(
        reverse("admin:brokerage_tradingstate_add"),
        {"scope": "instrument", "instrument": eurusd.pk, "state": "reduce_only", "reason": "news"},
    )
    assert response.status_code == 302, response.content
    row = TradingState.objects.get(instrument=eurusd)
    assert (row.state, row.set_by) == ("reduce_only", risk)
    assert TradingStateChange.objects.get().actor == risk
    assert AuditLog.objects.filter(action="trading_state.set", actor=risk).count() == 1
    assert (
        browser(risk).post(reverse("admin:brokerage_tradingstate_delete", args=[row.pk])).status_code == 403
    )


def test_an_invalid_switch_changes_nothing(risk: User) -> None:
    response = browser(risk).post(reverse("admin:brokerage_tradingstate_switch"), {"state": "off"})
    assert response.status_code == 302
    assert not TradingState.objects.exists()
    assert browser(risk).get(reverse("admin:brokerage_tradingstate_switch")).status_code == 405


def test_the_api_lists_and_sets_the_states_of_each_scope(
    risk: User, viewer: User, quotes: QuoteSetter, alice_account: Any, django_capture_on_commit_callbacks: Any
) -> None:
    api = client_for(risk)
    with django_capture_on_commit_callbacks(execute=True):
        set_group = api.post(
            STATES,
            {"scope": "group", "group": "standard", "state": "halted", "reason": "audit"},
            format="json",
        )
        set_venue = api.post(
            STATES, {"scope": "venue", "venue": "sim", "state": "reduce_only"}, format="json"
        )
    assert set_group.status_code == 200, set_group.content
    assert set_group.json() | {"id": 0, "set_at": ""} == {
        "id": 0,
        "scope": "group",
        "venue": None,
        "instrument": None,
        "group": "standard",
        "state": "halted",
        "reason": "audit",
        "source": "manual",
        "auto_resume": False,
        "set_by": "rita",
        "set_at": "",
    }
    assert set_venue.json()["venue"] == "sim"

    listed = client_for(viewer).get(STATES)
    assert listed.status_code == 200
    assert sorted((s["scope"], s["state"]) for s in listed.json()) == [
        ("group", "halted"),
        ("venue", "reduce_only"),
    ]
    order = client_for(alice_account.owner).post(
        f"/api/v1/accounts/{alice_account.number}/orders",
        {"symbol": "EURUSD", "side": "buy", "volume": "0.01"},
        format="json",
    )
    assert (order.status_code, order.json()["error"]["code"]) == (409, "trading_halted")

    with django_capture_on_commit_callbacks(execute=True):
        cleared = api.post(STATES, {"scope": "group", "group": "standard", "state": "active"}, format="json")
    assert cleared.json()["state"] == "active"


@pytest.mark.parametrize(
    "body, code",
    [
        ({"scope": "venue", "state": "halted"}, "invalid_scope"),
        ({"scope": "global", "instrument": "EURUSD", "state": "halted"}, "invalid_scope"),
        ({"scope": "instrument", "instrument": "NOPE", "state": "halted"}, None),
        ({"scope": "global", "state": "paused"}, None),
        ({"scope": "planet", "state": "halted"}, None),
    ],
)
def test_the_api_refuses_a_bad_state_with_a_4xx(
    risk: User, quotes: QuoteSetter, body: dict[str, str], code: str | None
) -> None:
    response = client_for(risk).post(STATES, body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"}
    if code:
        assert error["code"] == code
    assert not TradingState.objects.exists()


def test_only_the_risk_role_sets_a_state_through_the_api(viewer: User, quotes: QuoteSetter) -> None:
    dealer = make_role_user("dora", DEALER)
    for user in (viewer, dealer):
        response = client_for(user).post(STATES, {"scope": "global", "state": "halted"}, format="json")
        assert response.status_code == 403
    assert client_for(make_role_user("nobody")).get(STATES).status_code == 403
    assert not TradingState.objects.exists()
