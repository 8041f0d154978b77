"""Each role against each console page, admin action and back-office API operation it may and may not
use. The tables below are the expectations; a page or action that declares no permission, or that is
missing from the tables, fails the test."""

from collections.abc import Collection
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from brokerage.models import TradingAccount
from livermore.dashboard import PANELS
from tests.support.users import make_role_user
from users.models import ApiKey, User
from users.roles import ADMINISTRATOR, BACK_OFFICE, DEALER, RISK, ROLES, VIEWER

from .conftest import PRICES, QuoteSetter

pytestmark = pytest.mark.django_db

NOBODY = "nobody"  # staff with no role at all
EVERY = frozenset(ROLES)
STAFF = (*ROLES, NOBODY)

# Custom admin pages (url name) -> the roles that may open them.
PAGES: dict[str, frozenset[str]] = {
    "brokerage_tradingaccount_cash": frozenset({BACK_OFFICE}),
    "brokerage_tradingaccount_conditions": frozenset({BACK_OFFICE, RISK}),
    "brokerage_tradingaccount_trade": frozenset({DEALER}),
    "brokerage_exposure": EVERY,
    "brokerage_margin_watch": EVERY,
    "brokerage_tradingstate_switch": frozenset({RISK}),
    "marketdata_venue_catalogue": frozenset({RISK}),
    "marketdata_venue_watchlist": frozenset({RISK}),
    "marketdata_live_quotes": EVERY,
    "marketdata_instrument_chart": EVERY,
    "fix_routingrule_preview": EVERY,
    "alerts_signals": EVERY,
    "alerts_signal_chart": EVERY,
    "auth_user_password_change": frozenset({ADMINISTRATOR}),
    "alerts_metrics": EVERY,
    "alerts_my_settings": EVERY,
    "otp_totp_totpdevice_config": frozenset({ADMINISTRATOR}),
    "otp_totp_totpdevice_qrcode": frozenset({ADMINISTRATOR}),
}
# Pages opened with GET below for the roles allowed (the venue pages would call the venue).
GET_ALLOWED = {
    "brokerage_tradingaccount_cash",
    "brokerage_tradingaccount_conditions",
    "brokerage_tradingaccount_trade",
    "brokerage_exposure",
    "brokerage_margin_watch",
    "marketdata_live_quotes",
    "marketdata_instrument_chart",
    "alerts_my_settings",
}

# Dashboard panels on the admin index (livermore.dashboard.PANELS) -> the roles that see them.
DASHBOARD_PANELS: dict[str, frozenset[str]] = {
    "feed_health": EVERY,
    "fix_sessions": EVERY,
    "exposure": EVERY,
    "margin_call": EVERY,
    "four_eyes": EVERY,
    "notification_failures": EVERY,
}

# Admin actions (app.model.action) -> the roles that get them; delete_selected follows delete rights.
ACTIONS: dict[str, frozenset[str]] = {
    "brokerage.tradingaccount.close_all_positions": frozenset({DEALER}),
    "brokerage.position.close_positions": frozenset({DEALER}),
    "brokerage.order.cancel_orders": frozenset({DEALER}),
    "brokerage.cashoperation.approve": frozenset({BACK_OFFICE}),
    "brokerage.cashoperation.reject": frozenset({BACK_OFFICE}),
    "marketdata.venue.enable": frozenset({RISK}),
    "marketdata.venue.disable": frozenset({RISK}),
    "marketdata.venue.import_instruments": frozenset({RISK}),
    "marketdata.instrument.backfill_candles": frozenset({RISK}),
    "fix.fixsession.connect": frozenset({RISK}),
    "fix.fixsession.disconnect": frozenset({RISK}),
    "fix.fixsession.reset_seqnums": frozenset({RISK}),
    "fix.fixsession.set_seqnums": frozenset({RISK}),
    "fix.fixsession.reconcile_positions": frozenset({RISK}),
    "fix.fixorder.cancel_at_lp": frozenset({DEALER}),
    "alerts.notificationchannel.send_test_message": frozenset(),
    "alerts.notification.retry": frozenset(),
    "portfolio.coinbaselink.sync_now": frozenset(),
    "django_celery_beat.periodictask.enable_tasks": frozenset(),
    "django_celery_beat.periodictask.disable_tasks": frozenset(),
    "django_celery_beat.periodictask.toggle_tasks": frozenset(),
    "django_celery_beat.periodictask.run_tasks": frozenset(),
    "axes.accessattempt.cleanup_expired_attempts": frozenset(),
}


@pytest.fixture
def staff(db: None) -> dict[str, User]:
    users = {role: make_role_user(role, role) for role in ROLES}
    users[NOBODY] = make_role_user(NOBODY)
    return users


def _custom_urls() -> list[tuple[Any, Any]]:
    found = []
    for model_admin in admin.site._registry.values():
        default = {p.name for p in admin.ModelAdmin.get_urls(model_admin)}
        found += [(model_admin, p) for p in model_admin.get_urls() if p.name not in default]
    return found


def test_every_custom_admin_page_declares_a_permission_and_is_in_the_table() -> None:
    for _, pattern in _custom_urls():
        assert getattr(pattern.callback, "required_permission", None), f"{pattern.name} declares none"
        assert pattern.name in PAGES, f"{pattern.name} is not in the role table"


def _every_action(model_admin: Any) -> list[tuple[Any, str]]:
    """The actions of a model admin as a superuser sees them: all it has, but those no one may use."""
    request = RequestFactory().get("/admin/")
    request.user = User(username="root", is_superuser=True, is_staff=True, is_active=True)
    return [(func, name) for func, name, _ in model_admin.get_actions(request).values()]


def test_every_admin_action_declares_a_permission_and_is_in_the_table() -> None:
    for model, model_admin in admin.site._registry.items():
        for func, name in _every_action(model_admin):
            assert getattr(func, "allowed_permissions", None), f"{model.__name__}.{name} declares none"
            if name != "delete_selected":
                assert f"{model._meta.label_lower}.{name}" in ACTIONS, f"{name} is not in the role table"


def test_each_role_gets_exactly_the_admin_actions_of_the_table(staff: dict[str, User]) -> None:
    for role, user in staff.items():
        request = RequestFactory().get("/admin/")
        request.user = user
        for model, model_admin in admin.site._registry.items():
            if not model_admin.has_view_or_change_permission(request):
                continue
            given = set(model_admin.get_actions(request))
            for _, name in _every_action(model_admin):
                label = f"{model._meta.label_lower}.{name}"
                if name == "delete_selected":
                    expected = user.has_perm(f"{model._meta.app_label}.delete_{model._meta.model_name}")
                else:
                    expected = role in ACTIONS[label]
                assert (name in given) == expected, f"{role}: {label}"


def test_each_role_opens_exactly_the_console_pages_of_the_table(
    staff: dict[str, User], alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    for _, pattern in _custom_urls():
        args = [alice_account.pk] if "<int:pk>" in str(pattern.pattern) else []
        if pattern.name == "auth_user_password_change":
            args = [alice_account.owner_id]
        if pattern.name == "marketdata_instrument_chart":
            from marketdata.models import Instrument

            args = [Instrument.objects.get(symbol="EURUSD").pk]
        if pattern.name.startswith("marketdata_venue"):
            from marketdata.models import Venue

            args = [Venue.objects.get(code="sim").pk]
        url = reverse(f"admin:{pattern.name}", args=args)
        for role, user in staff.items():
            browser = Client()
            browser.force_login(user)
            allowed = role in PAGES[pattern.name]
            if not allowed:
                assert browser.get(url).status_code == 403, f"{role} opened {pattern.name}"
            elif pattern.name in GET_ALLOWED:
                assert browser.get(url).status_code == 200, f"{role} refused {pattern.name}"


def test_every_dashboard_panel_declares_a_permission_and_is_in_the_table() -> None:
    assert {panel.name for panel in PANELS} == set(DASHBOARD_PANELS)
    for panel in PANELS:
        app, codename = panel.permission.split(".")
        assert Permission.objects.filter(content_type__app_label=app, codename=codename).exists(), panel


def test_each_role_sees_exactly_the_dashboard_panels_of_the_table(staff: dict[str, User]) -> None:
    for role, user in staff.items():
        browser = Client()
        browser.force_login(user)
        expected = {name for name, roles in DASHBOARD_PANELS.items() if role in roles}
        index = browser.get(reverse("admin:index")).content.decode()
        shown = {name for name in DASHBOARD_PANELS if f'data-table="{name}"' in index}
        assert shown == expected, role
        response = browser.get(reverse("admin_dashboard"))
        if expected:
            assert set(response.json()["tables"]) == expected, role
        else:
            assert response.status_code == 403, role


def test_a_staff_user_with_no_permission_cannot_deposit_or_change_leverage_from_the_console(
    staff: dict[str, User], alice_account: TradingAccount
) -> None:
    browser = Client()
    browser.force_login(staff[VIEWER])
    cash_url = reverse("admin:brokerage_tradingaccount_cash", args=[alice_account.pk])
    assert browser.post(cash_url, {"operation": "deposit", "amount": "1000000"}).status_code == 403
    conditions_url = reverse("admin:brokerage_tradingaccount_conditions", args=[alice_account.pk])
    assert browser.post(conditions_url, {"status": "active", "leverage": "1000"}).status_code == 403
    alice_account.refresh_from_db()
    assert (alice_account.balance, alice_account.leverage) == (Decimal("10000"), None)


def test_the_viewer_sees_every_admin_list_and_the_account_page_read_only(
    staff: dict[str, User], alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    browser = Client()
    browser.force_login(staff[VIEWER])
    request = RequestFactory().get("/admin/")
    request.user = staff[VIEWER]
    for model, model_admin in admin.site._registry.items():
        if model_admin.has_view_permission(request):
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
            assert browser.get(url).status_code == 200, url
            assert not model_admin.has_change_permission(request), model
    page = browser.get(reverse("admin:brokerage_tradingaccount_change", args=[alice_account.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content


# Back-office API operations -> the roles that may use them (a client's own account aside).
def _api_operations(account: TradingAccount) -> dict[str, tuple[str, str, dict[str, Any], Collection[str]]]:
    base = f"/api/v1/backoffice/accounts/{account.number}"
    mine = f"/api/v1/accounts/{account.number}"
    return {
        "read account": ("get", mine, {}, EVERY),
        "place order": (
            "post",
            f"{mine}/orders",
            {"symbol": "EURUSD", "side": "buy", "volume": "0.01"},
            {DEALER},
        ),
        "margin preview": ("get", f"{mine}/margin-preview?symbol=EURUSD&side=buy&volume=0.01", {}, EVERY),
        "deposit": ("post", f"{base}/deposit", {"amount": "10"}, {BACK_OFFICE}),
        "withdraw": ("post", f"{base}/withdraw", {"amount": "10"}, {BACK_OFFICE}),
        "adjust": ("post", f"{base}/adjust", {"amount": "10", "comment": "fix"}, {BACK_OFFICE}),
        "bonus": ("post", f"{base}/bonus", {"amount": "10"}, {BACK_OFFICE}),
        "status": ("post", f"{base}/status", {"status": "active", "reason": "review"}, {BACK_OFFICE, RISK}),
        "leverage": ("post", f"{base}/leverage", {"leverage": 50}, {BACK_OFFICE, RISK}),
        "reset password": (
            "post",
            f"{base}/reset-password",
            {"password": "a-new-long-passphrase-9"},
            {BACK_OFFICE},
        ),
        "cash queue": ("get", "/api/v1/backoffice/cash-operations?status=pending", {}, EVERY),
        "trading states": ("get", "/api/v1/backoffice/trading-states", {}, EVERY),
        "set a trading state": (
            "post",
            "/api/v1/backoffice/trading-states",
            {"scope": "instrument", "instrument": "USDJPY", "state": "active", "reason": "review"},
            {RISK},
        ),
    }


def test_each_role_uses_exactly_the_api_operations_of_the_table(
    staff: dict[str, User], alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    for name, (method, url, body, allowed) in _api_operations(alice_account).items():
        for role, user in staff.items():
            for symbol, (bid, ask) in PRICES.items():
                quotes(symbol, bid, ask)  # fresh for every request of this long loop
            api = APIClient()
            api.force_authenticate(user)
            response = getattr(api, method)(url, body, format="json")
            if role in allowed:
                assert response.status_code < 400, f"{role} {name}: {response.content!r}"
            else:
                assert response.status_code == 403, f"{role} {name}: {response.status_code}"
                assert response.json()["error"]["code"] in {"forbidden_account", "permission_denied"}


def test_is_staff_alone_lists_no_one_elses_account(
    staff: dict[str, User], alice_account: TradingAccount
) -> None:
    api = APIClient()
    api.force_authenticate(staff[NOBODY])
    assert api.get("/api/v1/accounts").json() == []
    api.force_authenticate(staff[VIEWER])
    assert [a["number"] for a in api.get("/api/v1/accounts").json()] == [alice_account.number]


def test_an_api_key_is_only_for_oneself_unless_an_administrator_and_never_for_more_rights(
    staff: dict[str, User], alice: User, admin_user: User
) -> None:
    add_only = make_role_user("keys-only")
    add_only.user_permissions.add(Permission.objects.get(codename="add_apikey"))
    browser = Client()
    browser.force_login(User.objects.get(pk=add_only.pk))
    response = browser.post("/admin/users/apikey/add/", {"user": admin_user.pk, "name": "mine now"})
    assert response.status_code in (200, 403) and not ApiKey.objects.exists()

    administrator = Client()
    administrator.force_login(staff[ADMINISTRATOR])
    administrator.post("/admin/users/apikey/add/", {"user": admin_user.pk, "name": "root"})
    assert not ApiKey.objects.filter(user=admin_user).exists()  # a superuser has more rights
    administrator.post("/admin/users/apikey/add/", {"user": alice.pk, "name": "crm bot"})
    assert ApiKey.objects.get().user == alice  # a client has fewer
