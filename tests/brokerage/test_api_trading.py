from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from brokerage.models import ClientGroup, Deal, Order, OrderStatus, Position, PositionStatus, TradingAccount
from brokerage.selectors import posted_balance
from tests.support.trading import open_account
from tests.support.users import PASSWORD
from users.models import AuditLog, User

from .conftest import QuoteSetter, client_for

pytestmark = pytest.mark.django_db


def orders_url(account: TradingAccount) -> str:
    return f"/api/v1/accounts/{account.number}/orders"


BUY_LIMIT = {"symbol": "EURUSD", "side": "buy", "volume": "0.10", "type": "limit", "price": "1.08000"}


def place_buy_limit(api: APIClient, account: TradingAccount) -> Any:
    """A buy limit below the market: it rests as pending. The response."""
    return api.post(orders_url(account), BUY_LIMIT, format="json")


def buy(
    api: APIClient, account: TradingAccount, volume: str = "0.10", symbol: str = "EURUSD", **extra: object
):
    return api.post(
        orders_url(account), {"symbol": symbol, "side": "buy", "volume": volume, **extra}, format="json"
    )


def test_a_full_order_flow_through_the_api(alice_account: TradingAccount, quotes: QuoteSetter) -> None:
    api = APIClient()
    tokens = api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    base = f"/api/v1/accounts/{alice_account.number}"

    placed = buy(api, alice_account, volume="0.20")
    assert placed.status_code == 201, placed.content
    order = placed.json()
    assert order["status"] == "filled"
    assert Decimal(order["fill_price"]) == Decimal("1.08510")  # BUY at the ask

    positions = api.get(f"{base}/positions", {"status": "open"}).json()["results"]
    assert len(positions) == 1
    position = positions[0]
    assert position["unrealized_pnl"] == "-2.00"  # 0.2 lot marked at the bid, 1 pip spread
    summary = api.get(base).json()["summary"]
    assert summary["unrealized_pnl"] == "-2.00"
    assert summary["margin"] == "217.02"  # 0.2 * 100000 * 1.08510 / 100

    modified = api.patch(
        f"{base}/positions/{position['id']}", {"sl": "1.08000", "tp": "1.09000"}, format="json"
    )
    assert modified.status_code == 200
    assert Decimal(modified.json()["sl"]) == Decimal("1.08")

    quotes("EURUSD", "1.08610", "1.08620")
    partial = api.post(f"{base}/positions/{position['id']}/close", {"volume": "0.05"}, format="json")
    assert partial.status_code == 200, partial.content
    assert Decimal(partial.json()["deals"][0]["realized_pnl"]) == Decimal("5")  # 0.05 lot * 10 pips
    assert Decimal(partial.json()["positions"][0]["volume"]) == Decimal("0.15")

    closed = api.post(f"{base}/positions/close", {"which": "all"}, format="json")
    assert closed.status_code == 200
    assert closed.json()["positions"][0]["status"] == "closed"

    deals = api.get(f"{base}/deals").json()["results"]
    assert [d["entry"] for d in deals] == ["out", "out", "in"]
    ledger = api.get(f"{base}/ledger").json()["results"]
    alice_account.refresh_from_db()
    assert (
        Decimal(ledger[0]["balance_after"]) == alice_account.balance == posted_balance(account=alice_account)
    )
    assert {p["kind"] for p in ledger} >= {"deposit", "realized_pnl"}
    assert alice_account.balance == Decimal("10020")  # +5 then +15 on the remaining 0.15 lot


def test_an_order_replayed_with_its_idempotency_key_is_placed_once(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    body = {"symbol": "EURUSD", "side": "buy", "volume": "0.10"}
    first = alice_api.post(orders_url(alice_account), body, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    again = alice_api.post(orders_url(alice_account), body, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1
    assert Deal.objects.count() == 1

    other = alice_api.post(
        orders_url(alice_account), {**body, "volume": "0.20"}, format="json", HTTP_IDEMPOTENCY_KEY="order-1"
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"symbol": "EURUSD", "side": "buy", "volume": "abc"}, 400, "invalid"),
        ({"symbol": "EURUSD", "side": "hold", "volume": "0.10"}, 400, "invalid"),
        ({"symbol": "EURUSD", "side": "buy"}, 400, "invalid"),
        ({"symbol": "EURUSD", "side": "buy", "volume": "0.001"}, 422, "invalid_volume"),
        ({"symbol": "NOPE", "side": "buy", "volume": "0.10"}, 404, "unknown_symbol"),
        ({"symbol": "EURUSD", "side": "buy", "volume": "0.10", "sl": "1.09"}, 422, "invalid_sl"),
        ({"symbol": "EURUSD", "side": "buy", "volume": "90"}, 422, "insufficient_margin"),
    ],
)
def test_bad_orders_get_a_clear_error_and_store_nothing(
    alice_api: APIClient,
    alice_account: TradingAccount,
    quotes: QuoteSetter,
    body: dict,
    status: int,
    code: str,
) -> None:
    response = alice_api.post(orders_url(alice_account), body, format="json")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert not Order.objects.exists()
    alice_account.refresh_from_db()
    assert alice_account.balance == Decimal("10000")


def test_no_fresh_price_no_fill(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    from kernel.redis import sync_client
    from marketdata.publisher import ticker_key

    sync_client().delete(ticker_key("EURUSD"))
    response = buy(alice_api, alice_account)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_price"
    assert not Order.objects.exists()


def test_a_pending_order_can_be_cancelled_once(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    placed = place_buy_limit(alice_api, alice_account)
    assert placed.status_code == 201
    assert placed.json()["status"] == "pending"
    cancel_url = f"{orders_url(alice_account)}/{placed.json()['id']}/cancel"
    cancelled = alice_api.post(cancel_url)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = alice_api.post(cancel_url)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_pending"
    pending = alice_api.get(orders_url(alice_account), {"status": "pending"}).json()["results"]
    assert pending == []


def test_an_order_of_another_account_cannot_be_cancelled_through_yours(
    alice_api: APIClient,
    alice_account: TradingAccount,
    bob_account: TradingAccount,
    quotes: QuoteSetter,
) -> None:
    bob_order = place_buy_limit(client_for(bob_account.owner), bob_account)
    response = alice_api.post(f"{orders_url(alice_account)}/{bob_order.json()['id']}/cancel")
    assert response.status_code == 404
    assert Order.objects.get(pk=bob_order.json()["id"]).status == OrderStatus.PENDING
    assert alice_api.get(f"{orders_url(alice_account)}/{bob_order.json()['id']}").status_code == 404
    assert alice_api.get(f"{orders_url(bob_account)}/{bob_order.json()['id']}").status_code == 403


def test_one_order_is_read_back_by_its_id(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    placed = place_buy_limit(alice_api, alice_account).json()
    read = alice_api.get(f"{orders_url(alice_account)}/{placed['id']}")
    assert read.status_code == 200 and read.json() == placed
    missing = alice_api.get(f"{orders_url(alice_account)}/{placed['id'] + 1000}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_bulk_close_closes_only_the_winners_of_a_symbol(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    buy(alice_api, alice_account, symbol="EURUSD")
    alice_api.post(
        orders_url(alice_account), {"symbol": "EURUSD", "side": "sell", "volume": "0.10"}, format="json"
    )
    buy(alice_api, alice_account, symbol="GBPUSD")
    quotes("EURUSD", "1.08700", "1.08710")  # the EURUSD long wins, the short loses
    quotes("GBPUSD", "1.28000", "1.28016")  # the GBPUSD long wins too

    response = alice_api.post(
        f"/api/v1/accounts/{alice_account.number}/positions/close",
        {"which": "winners", "symbol": "EURUSD"},
        format="json",
    )
    assert response.status_code == 200
    closed = response.json()["positions"]
    assert [(p["symbol"], p["side"]) for p in closed] == [("EURUSD", "buy")]
    still_open = Position.objects.filter(status=PositionStatus.OPEN).values_list("instrument__symbol", "side")
    assert sorted(still_open) == [("EURUSD", "sell"), ("GBPUSD", "buy")]


def test_an_operator_acts_on_a_client_account_as_operator(
    operator: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    response = buy(client_for(operator), alice_account)
    assert response.status_code == 201
    order = Order.objects.get()
    assert order.reason == "operator"
    assert order.created_by == operator


def test_lists_are_paginated_newest_first(
    alice_api: APIClient, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    for _ in range(3):
        buy(alice_api, alice_account)
    page = alice_api.get(orders_url(alice_account), {"limit": 2}).json()
    assert len(page["results"]) == 2
    assert page["results"][0]["id"] > page["results"][1]["id"]
    rest = alice_api.get(page["next"]).json()
    assert len(rest["results"]) == 1


def test_position_pnl_is_shown_in_the_account_currencys_minor_unit(
    alice: User, alice_api: APIClient, quotes: QuoteSetter
) -> None:
    yen = ClientGroup.objects.create(name="yen", currency="JPY", leverage=100)
    account = open_account(alice, yen, "1000000")
    assert buy(alice_api, account, symbol="USDJPY").status_code == 201
    positions = alice_api.get(f"/api/v1/accounts/{account.number}/positions").json()["results"]
    assert positions[0]["unrealized_pnl"] == "-140"  # 0.1 lot x -0.014 (the spread) x 100000, in yen


def test_a_pending_order_is_modified_by_patch_and_fields_left_out_keep_their_values(
    alice_api: APIClient, alice_account: TradingAccount, operator: User, quotes: QuoteSetter
) -> None:
    placed = alice_api.post(
        orders_url(alice_account),
        {
            "symbol": "EURUSD",
            "side": "buy",
            "volume": "0.10",
            "type": "limit",
            "price": "1.08000",
            "sl": "1.07",
        },
        format="json",
    ).json()
    url = f"{orders_url(alice_account)}/{placed['id']}"

    moved = alice_api.patch(url, {"price": "1.08100"}, format="json")
    assert moved.status_code == 200
    assert (moved.json()["price"], moved.json()["sl"]) == ("1.0810000000", "1.0700000000")
    removed = alice_api.patch(url, {"sl": None}, format="json")
    assert removed.json()["sl"] is None and removed.json()["price"] == "1.0810000000"

    wrong_side = alice_api.patch(url, {"price": "1.09000"}, format="json")  # above the market ask
    assert wrong_side.status_code == 422 and wrong_side.json()["error"]["code"] == "invalid_price"
    not_a_number = alice_api.patch(url, {"price": "abc"}, format="json")
    assert not_a_number.status_code == 400
    assert Order.objects.get(pk=placed["id"]).price == Decimal("1.081")
    assert not AuditLog.objects.exists()  # the owner's own changes are not audited

    by_desk = client_for(operator).patch(url, {"tp": "1.10"}, format="json")
    assert by_desk.status_code == 200
    entry = AuditLog.objects.get()
    assert (entry.actor, entry.action, entry.details["tp"]) == (operator, "order.modify", "1.1000000000")


def test_only_the_owner_or_an_operator_modifies_an_order(
    alice_api: APIClient, alice_account: TradingAccount, bob_account: TradingAccount, quotes: QuoteSetter
) -> None:
    bob_order = place_buy_limit(client_for(bob_account.owner), bob_account).json()
    through_mine = alice_api.patch(
        f"{orders_url(alice_account)}/{bob_order['id']}", {"price": "1.07"}, format="json"
    )
    assert through_mine.status_code == 404
    through_his = alice_api.patch(
        f"{orders_url(bob_account)}/{bob_order['id']}", {"price": "1.07"}, format="json"
    )
    assert through_his.status_code == 403
    assert Order.objects.get(pk=bob_order["id"]).price == Decimal("1.08")
