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


def test_concurrent_requests_never_pass_beyond_the_rate(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is checked and recorded in one Redis script: requests racing from many threads
    cannot all read the same history and all pass (DRF's cache-based throttle lets them)."""
    import threading

    from kernel.throttling import ScopedWriteThrottle

    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "orders", "5/min")
    request = type("R", (), {"method": "POST", "user": alice_api.handler._force_user})()
    view = type("V", (), {"throttle_scope": "orders"})()
    start = threading.Barrier(20)
    results: list[bool] = []

    def check() -> None:
        throttle = ScopedWriteThrottle()
        start.wait()
        results.append(throttle.allow_request(request, view))  # type: ignore[arg-type]

    threads = [threading.Thread(target=check) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5
    denied = ScopedWriteThrottle()
    assert not denied.allow_request(request, view)  # type: ignore[arg-type]
    assert 59 < denied.wait() <= 60
