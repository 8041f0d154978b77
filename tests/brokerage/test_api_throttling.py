import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from brokerage.models import Order, TradingAccount
from users.models import User

from .conftest import QuoteSetter

pytestmark = pytest.mark.django_db

ORDER = {"symbol": "EURUSD", "side": "buy", "volume": "0.01"}


def test_the_default_rates_are_realistic() -> None:
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert (rates["user"], rates["anon"], rates["orders"], rates["portfolio_sync"]) == (
        "1200/min",
        "60/min",
        "600/min",
        "6/min",
    )


def test_order_submission_beyond_its_rate_gets_429_throttled(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "orders", "3/min")
    url = f"/api/v1/accounts/{alice_account.number}/orders"
    codes = [alice_api.post(url, ORDER, format="json").status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    response = alice_api.post(url, ORDER, format="json")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert error["message"] and error["fields"] == {}
    assert Order.objects.count() == 3
    assert alice_api.get(url).status_code == 200  # reading the orders is not an order


def test_portfolio_sync_is_throttled_per_user(alice_api: APIClient, bob: User) -> None:
    codes = [alice_api.post("/api/v1/portfolio/sync").status_code for _ in range(7)]
    assert codes == [409] * 6 + [429]  # alice has no Coinbase key: refused, but still counted
    assert alice_api.post("/api/v1/portfolio/sync").json()["error"]["code"] == "throttled"
    bob_api = APIClient()
    bob_api.force_authenticate(bob)
    assert bob_api.post("/api/v1/portfolio/sync").status_code == 409
