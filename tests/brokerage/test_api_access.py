import time
import uuid

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from brokerage.models import Order, TradingAccount
from users.models import User

from .conftest import QuoteSetter, client_for

pytestmark = pytest.mark.django_db

ACCOUNT_PATHS = ["", "/orders", "/positions", "/deals", "/ledger"]


def test_unauthenticated_requests_are_refused(alice_account: TradingAccount) -> None:
    api = APIClient()
    for path in ["/api/v1/accounts", *(f"/api/v1/accounts/{alice_account.number}{p}" for p in ACCOUNT_PATHS)]:
        response = api.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda user: jwt.encode(claims(user), None, algorithm="none"), id="alg-none"),
        pytest.param(lambda user: jwt.encode(claims(user), "x" * 48, algorithm="HS256"), id="wrong-key"),
        pytest.param(
            lambda user: jwt.encode(
                claims(user, exp=int(time.time()) - 1), settings.JWT_SIGNING_KEY, algorithm="HS256"
            ),
            id="expired",
        ),
    ],
)
def test_bad_tokens_are_refused(alice: User, alice_account: TradingAccount, token: object) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token(alice)}")  # type: ignore[operator]
    response = api.get(f"/api/v1/accounts/{alice_account.number}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def claims(user: User, *, exp: int | None = None) -> dict[str, object]:
    now = int(time.time())
    return {
        "token_type": "access",
        "exp": exp or now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": str(user.pk),
    }


def test_a_valid_token_is_accepted(alice: User, alice_account: TradingAccount) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(alice)}")
    assert api.get(f"/api/v1/accounts/{alice_account.number}").status_code == 200


def test_a_client_lists_only_their_accounts(
    alice_api: APIClient, alice_account: TradingAccount, bob_account: TradingAccount
) -> None:
    numbers = [a["number"] for a in alice_api.get("/api/v1/accounts").json()]
    assert numbers == [alice_account.number]


def test_an_operator_lists_every_account(
    operator: User, alice_account: TradingAccount, bob_account: TradingAccount
) -> None:
    numbers = {a["number"] for a in client_for(operator).get("/api/v1/accounts").json()}
    assert numbers == {alice_account.number, bob_account.number}


@pytest.mark.parametrize("path", ACCOUNT_PATHS)
def test_a_foreign_account_is_forbidden(
    alice_api: APIClient, bob_account: TradingAccount, quotes: QuoteSetter, path: str
) -> None:
    response = alice_api.get(f"/api/v1/accounts/{bob_account.number}{path}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_account"


def test_orders_on_a_foreign_account_are_refused_and_not_stored(
    alice_api: APIClient, bob_account: TradingAccount, quotes: QuoteSetter
) -> None:
    response = alice_api.post(
        f"/api/v1/accounts/{bob_account.number}/orders",
        {"symbol": "EURUSD", "side": "buy", "volume": "0.10"},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_account"
    close_all = alice_api.post(f"/api/v1/accounts/{bob_account.number}/positions/close", format="json")
    assert close_all.status_code == 403
    assert not Order.objects.exists()


def test_an_unknown_account_is_not_found(alice_api: APIClient, alice_account: TradingAccount) -> None:
    response = alice_api.get("/api/v1/accounts/999999999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_operator_sees_a_clients_account(operator: User, alice_account: TradingAccount) -> None:
    response = client_for(operator).get(f"/api/v1/accounts/{alice_account.number}")
    assert response.status_code == 200
    assert response.json()["number"] == alice_account.number


def test_an_account_shows_its_margin_summary(alice_api: APIClient, alice_account: TradingAccount) -> None:
    body = alice_api.get(f"/api/v1/accounts/{alice_account.number}").json()
    assert body["group"] == "standard"
    assert body["leverage"] == 100
    assert body["summary"] == {
        "currency": "USD",
        "balance": "10000.00",
        "equity": "10000.00",
        "margin": "0.00",
        "free_margin": "10000.00",
        "margin_level": None,
        "unrealized_pnl": "0.00",
        "unpriced": [],
    }
