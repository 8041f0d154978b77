import logging
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from livermore.schedules import periodic_tasks_sync
from portfolio.models import CoinbaseLink, CoinbaseOrder, Holding, SyncStatus
from portfolio.services import coinbase_link_set, portfolio_sync
from portfolio.tasks import sync_all_portfolios
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake
from tests.support.users import make_client
from tests.support.waiting import wait_until
from users.models import User

pytestmark = pytest.mark.django_db


def account(uuid: str, currency: str, available: str, hold: str = "0") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": f"{currency} Wallet",
        "currency": currency,
        "available_balance": {"value": available, "currency": currency},
        "default": False,
        "active": True,
        "created_at": "2024-01-02T03:04:05.123Z",
        "updated_at": "2024-01-02T03:04:05.123Z",
        "deleted_at": None,
        "type": "ACCOUNT_TYPE_CRYPTO",
        "ready": True,
        "hold": {"value": hold, "currency": currency},
        "retail_portfolio_id": "b87a2d3f-8fb8-4d2a-a6e5-0c0a6ac8a1b1",
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


def order(order_id: str, status: str, created: str, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "product_id": "BTC-USD",
        "user_id": "2222-000000-000000",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": "0.01", "limit_price": "90000.00", "post_only": False}
        },
        "side": "BUY",
        "client_order_id": f"client-{order_id}",
        "status": status,
        "time_in_force": "GOOD_UNTIL_CANCELLED",
        "created_time": created,
        "completion_percentage": "100" if status == "FILLED" else "0",
        "filled_size": "0.01" if status == "FILLED" else "0",
        "average_filled_price": "90000.00" if status == "FILLED" else "0",
        "fee": "",
        "number_of_fills": "1" if status == "FILLED" else "0",
        "filled_value": "900.00" if status == "FILLED" else "0",
        "pending_cancel": False,
        "size_in_quote": False,
        "total_fees": "5.4" if status == "FILLED" else "0",
        "size_inclusive_of_fees": False,
        "total_value_after_fees": "905.4",
        "trigger_status": "INVALID_ORDER_TYPE",
        "order_type": "LIMIT",
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": status == "FILLED",
        "product_type": "SPOT",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": "0",
        "last_fill_time": "2026-01-05T10:00:00.5Z" if status == "FILLED" else None,
        **extra,
    }


@pytest.fixture(autouse=True)
def coinbase_at_fake(settings: Any, coinbase_rest: CoinbaseRestFake) -> CoinbaseRestFake:
    settings.COINBASE_REST_URL = coinbase_rest.url
    coinbase_rest.accounts = [
        account("a-btc", "BTC", "0.12345678", "0.01"),
        account("a-eth", "ETH", "1.5"),
        account("a-usd", "USD", "1000.25", "900.00"),
        account("a-usdc", "USDC", "0"),
        account("a-sol", "SOL", "12.000000001"),
    ]
    coinbase_rest.orders = [
        order("o-open", "OPEN", "2026-01-04T09:00:00Z"),
        order("o-filled", "FILLED", "2026-01-05T09:59:00.123456Z"),
        order("o-filled-2", "FILLED", "2026-01-03T08:00:00Z"),
        order("o-cancelled", "CANCELLED", "2026-01-02T08:00:00Z"),
    ]
    return coinbase_rest


def test_a_sync_mirrors_accounts_and_open_and_filled_orders_not_ones_that_ended_unfilled(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    link = portfolio_sync(link=link)
    assert (link.status, link.last_error) == (SyncStatus.OK, "")
    holdings = {h.currency: h for h in Holding.objects.filter(user=link.user)}
    assert set(holdings) == {"BTC", "ETH", "USD", "USDC", "SOL"}
    assert (holdings["BTC"].available, holdings["BTC"].hold) == (Decimal("0.12345678"), Decimal("0.01"))
    assert holdings["SOL"].available == Decimal("12.000000001")
    assert holdings["USD"].total == Decimal("1900.25")
    orders = {o.order_id: o for o in CoinbaseOrder.objects.filter(user=link.user)}
    assert set(orders) == {"o-open", "o-filled", "o-filled-2"}
    filled = orders["o-filled"]
    assert (filled.status, filled.filled_size, filled.average_filled_price, filled.total_fees) == (
        "FILLED",
        Decimal("0.01"),
        Decimal("90000.00"),
        Decimal("5.4"),
    )
    assert filled.created_time.isoformat() == "2026-01-05T09:59:00.123456+00:00"
    # accounts came in three cursor pages; every request had its own verified JWT
    assert [r.arg("cursor") for r in coinbase_rest.requests if r.path.endswith("/accounts")] == [
        None,
        "2",
        "4",
    ]
    assert not coinbase_rest.rejected_jwts and len(coinbase_rest.jwt_claims) == len(coinbase_rest.requests)


def test_the_next_sync_is_incremental_and_settles_orders_that_left_open(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    link = portfolio_sync(link=link)
    synced_until = link.orders_synced_until
    assert synced_until is not None
    coinbase_rest.requests.clear()
    coinbase_rest.orders[0] = order("o-open", "FILLED", "2026-01-04T09:00:00Z")
    coinbase_rest.orders.append(order("o-new", "FILLED", "2099-01-01T00:00:00Z"))
    coinbase_rest.accounts = coinbase_rest.accounts[:2]
    portfolio_sync(link=link)
    batches = [r for r in coinbase_rest.requests if r.path.endswith("/orders/historical/batch")]
    filled_query = next(
        r for r in batches if r.query.get("order_status") == ["FILLED", "CANCELLED", "EXPIRED"]
    )
    assert filled_query.arg("start_date") == synced_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert any(r.query.get("order_ids") == ["o-open"] for r in batches)
    orders = {o.order_id: o.status for o in CoinbaseOrder.objects.filter(user=link.user)}
    assert orders == {"o-open": "FILLED", "o-filled": "FILLED", "o-filled-2": "FILLED", "o-new": "FILLED"}
    assert set(Holding.objects.filter(user=link.user).values_list("currency", flat=True)) == {"BTC", "ETH"}


def test_a_401_marks_the_sync_failed_and_keeps_the_holdings(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake, caplog: pytest.LogCaptureFixture
) -> None:
    portfolio_sync(link=link)
    before = list(Holding.objects.filter(user=link.user).values_list("currency", "available"))
    coinbase_rest.revoked = True
    with caplog.at_level(logging.WARNING):
        link = portfolio_sync(link=link)
    assert link.status == SyncStatus.FAILED
    assert "Coinbase rejected the API key (HTTP 401: Unauthorized)" in link.last_error
    assert list(Holding.objects.filter(user=link.user).values_list("currency", "available")) == before
    assert CoinbaseOrder.objects.filter(user=link.user).count() == 3
    assert "portfolio sync failed" in caplog.text
    assert (
        len([r for r in coinbase_rest.requests if r.path.endswith("/accounts")]) == 3 + 1
    )  # no retry on 401


def test_the_key_never_appears_in_api_responses_or_logs(
    trader: User, coinbase_key: CoinbaseKey, coinbase_rest: CoinbaseRestFake, caplog: pytest.LogCaptureFixture
) -> None:
    api = APIClient()
    api.force_authenticate(trader)
    secrets = [coinbase_key.name, coinbase_key.private_pem.splitlines()[1], "Bearer"]
    with caplog.at_level(logging.DEBUG):
        stored = api.put(
            "/api/v1/portfolio/coinbase-key",
            {"api_key_name": coinbase_key.name, "private_key_pem": coinbase_key.private_pem},
            format="json",
        )
        portfolio_sync(link=CoinbaseLink.objects.get(user=trader))
        coinbase_rest.revoked = True
        portfolio_sync(link=CoinbaseLink.objects.get(user=trader))
        shown = api.get("/api/v1/portfolio")
    assert stored.status_code == 200 and shown.status_code == 200
    assert shown.json()["coinbase"]["status"] == "failed"
    assert len(shown.json()["holdings"]) == 5
    for text in (stored.content.decode(), shown.content.decode(), caplog.text):
        for secret in secrets:
            assert secret not in text
    raw = CoinbaseLink.objects.filter(user=trader).values_list("api_key_name", flat=True)
    assert raw[0] == coinbase_key.name  # decrypted by the field; the column holds a Fernet token


def test_the_api_shows_only_the_users_own_portfolio(link: CoinbaseLink, coinbase_key: CoinbaseKey) -> None:
    portfolio_sync(link=link)
    other = make_client("other")
    Holding.objects.create(
        user=other,
        account_uuid="x",
        currency="DOGE",
        available=Decimal(7),
        hold=Decimal(0),
        synced_at=link.created_at,
    )
    api = APIClient()
    api.force_authenticate(other)
    body = api.get("/api/v1/portfolio").json()
    assert body["coinbase"] is None
    assert [h["currency"] for h in body["holdings"]] == ["DOGE"] and body["orders"] == []
    api.force_authenticate(link.user)
    body = api.get("/api/v1/portfolio").json()
    assert "DOGE" not in [h["currency"] for h in body["holdings"]]
    btc = next(h for h in body["holdings"] if h["currency"] == "BTC")
    assert btc["available"] == "0.123456780000000000"
    assert APIClient().get("/api/v1/portfolio").status_code == 401


def test_a_bad_key_is_refused_with_a_clear_error_and_keeps_the_stored_one(link: CoinbaseLink) -> None:
    api = APIClient()
    api.force_authenticate(link.user)
    response = api.put(
        "/api/v1/portfolio/coinbase-key",
        {
            "api_key_name": "organizations/o/apiKeys/k",
            "private_key_pem": "-----BEGIN EC PRIVATE KEY-----\nnope",
        },
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_credentials" and "private_key_pem" in error["fields"]
    assert CoinbaseLink.objects.get(pk=link.pk).api_key_name == link.api_key_name
    missing = api.put("/api/v1/portfolio/coinbase-key", {"api_key_name": "x"}, format="json")
    assert missing.status_code == 400 and "private_key_pem" in missing.json()["error"]["fields"]


def test_the_admin_never_shows_the_key(
    admin_client: Client, link: CoinbaseLink, coinbase_key: CoinbaseKey
) -> None:
    page = admin_client.get(f"/admin/portfolio/coinbaselink/{link.pk}/change/").content.decode()
    assert coinbase_key.name not in page and "PRIVATE KEY" not in page
    response = admin_client.post(
        f"/admin/portfolio/coinbaselink/{link.pk}/change/",
        {"user": link.user_id, "enabled": "on", "new_api_key_name": "", "new_private_key_pem": ""},
    )
    assert response.status_code == 302
    assert CoinbaseLink.objects.get(pk=link.pk).private_key_pem == coinbase_key.private_pem.strip()


def test_a_new_key_in_the_admin_goes_through_the_service_and_restarts_the_sync(
    admin_client: Client, link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    link = portfolio_sync(link=link)
    assert link.status == SyncStatus.OK and link.orders_synced_until is not None
    other = CoinbaseKey.generate()
    response = admin_client.post(
        f"/admin/portfolio/coinbaselink/{link.pk}/change/",
        {"enabled": "on", "new_api_key_name": other.name, "new_private_key_pem": other.private_pem},
    )
    assert response.status_code == 302
    link.refresh_from_db()
    assert (link.api_key_name, link.private_key_pem) == (other.name, other.private_pem.strip())
    assert (link.status, link.orders_synced_until) == (SyncStatus.NEVER, None)

    response = admin_client.post(f"/admin/portfolio/coinbaselink/{link.pk}/change/", {"new_api_key_name": ""})
    assert response.status_code == 302
    link.refresh_from_db()
    assert not link.enabled and link.api_key_name == other.name


def test_the_beat_job_is_declared_and_seeded() -> None:
    periodic_tasks_sync()
    assert PeriodicTask.objects.get(name="portfolio sync").task == "portfolio.tasks.sync_all_portfolios"


@pytest.mark.django_db(transaction=True)
def test_a_worker_syncs_every_enabled_link_and_the_api_queues_one(
    coinbase_key: CoinbaseKey, coinbase_rest: CoinbaseRestFake, celery_worker: None
) -> None:
    trader = make_client("worker-trader")
    idle = make_client("idle")
    coinbase_link_set(user=trader, api_key_name=coinbase_key.name, private_key_pem=coinbase_key.private_pem)
    disabled = coinbase_link_set(
        user=idle, api_key_name=coinbase_key.name, private_key_pem=coinbase_key.private_pem
    )
    CoinbaseLink.objects.filter(pk=disabled.pk).update(enabled=False)
    assert sync_all_portfolios() == 1
    wait_until(lambda: CoinbaseLink.objects.get(user=trader).status == SyncStatus.OK)
    assert Holding.objects.filter(user=trader).count() == 5
    assert not Holding.objects.filter(user=idle).exists()
    coinbase_rest.accounts.append(account("a-ada", "ADA", "99"))
    api = APIClient()
    api.force_authenticate(trader)
    assert api.post("/api/v1/portfolio/sync").status_code == 202
    wait_until(lambda: Holding.objects.filter(user=trader, currency="ADA").exists())
    api.force_authenticate(idle)
    CoinbaseLink.objects.filter(user=idle).delete()
    refused = api.post("/api/v1/portfolio/sync")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_coinbase_key"
