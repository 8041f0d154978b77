"""The back-office API: accounts opened, cash with four-eyes and Idempotency-Key, conditions, password
resets; the margin preview and lot calculator; logging in with an account number; the OpenAPI docs."""

from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from brokerage.models import CashOperation, ClientGroup, TradingAccount
from tests.support.users import PASSWORD, make_role_user
from users.models import AuditLog, User
from users.roles import BACK_OFFICE, DEALER

from .conftest import QuoteSetter, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def maker(db: None) -> User:
    return make_role_user("maker", BACK_OFFICE)


@pytest.fixture
def checker(db: None) -> User:
    return make_role_user("checker", BACK_OFFICE)


def url(account: TradingAccount, action: str) -> str:
    return f"/api/v1/backoffice/accounts/{account.number}/{action}"


def balance(account: TradingAccount) -> Decimal:
    account.refresh_from_db()
    return account.balance


# The statements of one deposit through the API with an Idempotency-Key (benchmarked at 20/s by
# tests/bench/bench_backoffice.py): each is a database round trip under the account's lock.
DEPOSIT_STATEMENTS = 17


def test_a_deposit_through_the_api_takes_a_bounded_number_of_statements(
    maker: User, alice_account: TradingAccount, django_assert_max_num_queries: Any
) -> None:
    api = client_for(maker)
    api.post(url(alice_account, "deposit"), {"amount": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="warm")
    body = {"amount": "500", "method": "bank", "external_ref": "BANK-78"}
    with django_assert_max_num_queries(DEPOSIT_STATEMENTS):
        response = api.post(url(alice_account, "deposit"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert response.status_code == 201


def test_a_deposit_is_applied_once_per_idempotency_key(maker: User, alice_account: TradingAccount) -> None:
    api = client_for(maker)
    body = {"amount": "500", "method": "bank", "external_ref": "BANK-77"}
    first = api.post(url(alice_account, "deposit"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(url(alice_account, "deposit"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert first.json() | {"id": 0, "created_at": "", "applied_at": "", "transaction": 0} == {
        "id": 0,
        "account": alice_account.number,
        "kind": "deposit",
        "amount": "500.00000000",
        "currency": "USD",
        "method": "bank",
        "external_ref": "BANK-77",
        "comment": "",
        "status": "applied",
        "override": False,
        "created_by": "maker",
        "created_at": "",
        "decided_by": None,
        "decided_at": None,
        "decision_comment": "",
        "applied_at": "",
        "transaction": 0,
        "hold": None,
    }
    assert balance(alice_account) == Decimal("10500")
    duplicate = api.post(url(alice_account, "deposit"), body, format="json")
    assert (duplicate.status_code, duplicate.json()["error"]["code"]) == (409, "duplicate_external_ref")


def test_a_large_deposit_waits_for_another_operator(
    maker: User, checker: User, alice_account: TradingAccount
) -> None:
    created = client_for(maker).post(url(alice_account, "deposit"), {"amount": "25000"}, format="json")
    assert (created.status_code, created.json()["status"]) == (202, "pending")
    operation_id = created.json()["id"]
    queue = client_for(checker).get("/api/v1/backoffice/cash-operations?status=pending").json()["results"]
    assert [row["id"] for row in queue] == [operation_id]

    approve = f"/api/v1/backoffice/cash-operations/{operation_id}/approve"
    own = client_for(maker).post(approve, {}, format="json")
    assert (own.status_code, own.json()["error"]["code"]) == (403, "four_eyes_same_operator")
    assert balance(alice_account) == Decimal("10000")
    approved = client_for(checker).post(approve, {"comment": "KYC ok"}, format="json")
    assert approved.status_code == 200
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("applied", "checker")
    assert balance(alice_account) == Decimal("35000")


def test_a_rejected_withdrawal_gives_the_held_funds_back(
    maker: User, checker: User, alice_account: TradingAccount, quotes: QuoteSetter, settings
) -> None:
    settings.FOUR_EYES_THRESHOLDS = {"USD": Decimal("1000")}
    created = client_for(maker).post(url(alice_account, "withdraw"), {"amount": "4000"}, format="json")
    assert created.status_code == 202
    assert balance(alice_account) == Decimal("6000")
    rejected = client_for(checker).post(
        f"/api/v1/backoffice/cash-operations/{created.json()['id']}/reject", {}, format="json"
    )
    assert rejected.json()["status"] == "rejected"
    assert balance(alice_account) == Decimal("10000")


def test_bad_cash_input_is_a_clear_400(maker: User, alice_account: TradingAccount) -> None:
    api = client_for(maker)
    response = api.post(url(alice_account, "deposit"), {"amount": "lots", "method": "cash"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"amount", "method"}
    response = api.post(url(alice_account, "adjust"), {"amount": "-5"}, format="json")
    assert response.json()["error"]["fields"] == {"comment": ["This field is required."]}
    assert not CashOperation.objects.exists()


def test_back_office_opens_an_account_with_its_conditions(
    maker: User, alice: User, group: ClientGroup
) -> None:
    api = client_for(maker)
    body = {"owner": "alice", "group": "standard", "currency": "USD", "leverage": 200}
    response = api.post("/api/v1/backoffice/accounts", body, format="json")
    assert response.status_code == 201
    data = response.json()
    assert (data["owner"], data["group"], data["currency"], data["leverage"]) == (
        "alice",
        "standard",
        "USD",
        200,
    )
    assert AuditLog.objects.filter(action="account.open", actor=maker).count() == 1
    wrong = api.post("/api/v1/backoffice/accounts", {**body, "currency": "EUR"}, format="json")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (409, "currency_mismatch")
    staff_owner = api.post("/api/v1/backoffice/accounts", {**body, "owner": "maker"}, format="json")
    assert staff_owner.status_code == 400  # accounts are for clients
    assert TradingAccount.objects.count() == 1


def test_status_group_and_leverage_change_through_the_api(
    maker: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    api = client_for(maker)
    ClientGroup.objects.create(name="vip", currency="USD", leverage=300)
    assert api.post(url(alice_account, "status"), {"status": "close_only", "reason": "KYC"}).json()[
        "status"
    ] == ("close_only")
    assert api.post(url(alice_account, "group"), {"group": "vip"}).json()["leverage"] == 300
    assert api.post(url(alice_account, "leverage"), {"leverage": 50}, format="json").json()["leverage"] == 50
    missing = api.post(url(alice_account, "status"), {"status": "disabled"}, format="json")
    assert missing.json()["error"]["fields"] == {"reason": ["This field is required."]}


def test_a_reset_password_lets_the_client_in_by_account_number(
    maker: User, alice: User, alice_account: TradingAccount
) -> None:
    new = "a-brand-new-passphrase-42"
    response = client_for(maker).post(url(alice_account, "reset-password"), {"password": new}, format="json")
    assert response.status_code == 204
    assert AuditLog.objects.get(action="client.password_reset").object_id == str(alice.pk)
    login = APIClient().post(
        "/api/v1/auth/token", {"username": str(alice_account.number), "password": new}, format="json"
    )
    assert login.status_code == 200 and "access" in login.json()
    old = APIClient().post(
        "/api/v1/auth/token", {"username": str(alice_account.number), "password": PASSWORD}, format="json"
    )
    assert old.status_code == 401
    weak = client_for(maker).post(url(alice_account, "reset-password"), {"password": "123"}, format="json")
    assert weak.json()["error"]["code"] == "invalid_password"


def test_an_operators_password_is_not_reset_by_the_back_office(maker: User, group: ClientGroup) -> None:
    from brokerage import services

    dealer = make_role_user("dealer", DEALER)
    account = services.account_open(owner=dealer, group=group)
    response = client_for(maker).post(url(account, "reset-password"), {"password": "x-long-passphrase-1"})
    assert response.status_code == 403


def test_the_margin_preview_gives_margin_spread_cost_and_free_margin_after(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    response = alice_api.get(
        f"/api/v1/accounts/{alice_account.number}/margin-preview",
        {"symbol": "EURUSD", "side": "buy", "volume": "1"},
    )
    # Buys 100,000 EUR at the ask 1.08510 with leverage 100; marked at the bid 1.08500.
    assert response.json() == {
        "price": "1.0851000000",
        "margin": "1085.10",
        "spread_cost": "10.00",
        "commission": "0.00",
        "free_margin": "10000.00",
        "free_margin_after": "8904.90",
        "margin_level_after": "920.65",
    }
    bad = alice_api.get(
        f"/api/v1/accounts/{alice_account.number}/margin-preview",
        {"symbol": "EURUSD", "side": "buy", "volume": "0"},
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_volume")


def test_the_lot_calculator_sizes_a_trade_to_a_risk(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    path = f"/api/v1/accounts/{alice_account.number}/lot-calculator"
    response = alice_api.get(path, {"symbol": "EURUSD", "risk": "100", "stop_distance": "0.0050"})
    assert response.json() == {"volume": "0.20000000", "risk": "100.00", "loss_per_lot": "500.00000000"}
    # A USDJPY stop 0.50 below the ask 150.014 loses 50,000 JPY a lot: 334.42 USD at the stop's
    # price 149.514; 100 USD buys 0.299 lots, 0.29 in steps of 0.01.
    response = alice_api.get(path, {"symbol": "USDJPY", "risk": "100", "stop_distance": "0.50"})
    data = response.json()
    assert (data["volume"], data["risk"]) == ("0.29000000", "96.98")
    unknown = alice_api.get(path, {"symbol": "NOPE", "risk": "100", "stop_distance": "1"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_symbol")


def test_the_back_office_api_is_in_the_openapi_docs(admin_client) -> None:
    schema = admin_client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()
    for path in (
        "/api/v1/backoffice/accounts",
        "/api/v1/backoffice/accounts/{number}/deposit",
        "/api/v1/backoffice/accounts/{number}/withdraw",
        "/api/v1/backoffice/accounts/{number}/adjust",
        "/api/v1/backoffice/accounts/{number}/bonus",
        "/api/v1/backoffice/cash-operations/{operation_id}/approve",
        "/api/v1/backoffice/cash-operations/{operation_id}/reject",
        "/api/v1/accounts/{number}/margin-preview",
        "/api/v1/accounts/{number}/lot-calculator",
    ):
        assert path in schema["paths"], path
