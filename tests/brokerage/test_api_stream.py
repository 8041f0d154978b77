from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from brokerage import services
from brokerage.models import TradingAccount
from livermore.asgi import application
from tests.support.users import make_role_user
from users.models import User

from .conftest import QuoteSetter

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user: User) -> WebsocketCommunicator:
    token = await sync_to_async(lambda: str(AccessToken.for_user(user)))()
    ws = WebsocketCommunicator(
        application, "/ws/v1/stream", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    return ws


async def subscribe(ws: WebsocketCommunicator, channel: str) -> dict[str, Any]:
    await ws.send_json_to({"type": "subscribe", "channels": [channel]})
    return await ws.receive_json_from(timeout=5)


async def test_the_owner_gets_a_snapshot_and_then_account_events(
    alice: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    await sync_to_async(services.order_submit)(
        account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("0.10")
    )
    ws = await connect(alice)
    try:
        snapshot = await subscribe(ws, f"account:{alice_account.number}")
        assert snapshot["type"] == "snapshot"
        assert snapshot["data"]["number"] == alice_account.number
        assert [p["symbol"] for p in snapshot["data"]["positions"]] == ["EURUSD"]
        assert snapshot["data"]["orders"] == []
        assert "free_margin" in snapshot["data"]

        await sync_to_async(services.order_submit)(
            account=alice_account, symbol="GBPUSD", side="sell", volume=Decimal("0.10")
        )
        events = []
        while not any(e["type"] == "position" for e in events):
            events.append(await ws.receive_json_from(timeout=5))
        assert all(e["channel"] == f"account:{alice_account.number}" for e in events)
        order = next(e for e in events if e["type"] == "order")
        assert order["data"]["symbol"] == "GBPUSD"
    finally:
        await ws.disconnect()


async def test_another_user_is_refused_with_an_error_frame(
    alice_account: TradingAccount, bob: User, quotes: QuoteSetter
) -> None:
    ws = await connect(bob)
    try:
        frame = await subscribe(ws, f"account:{alice_account.number}")
        assert frame["type"] == "error"
        assert frame["code"] == "unknown_channel"
        await sync_to_async(services.order_submit)(
            account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("0.10")
        )
        assert await ws.receive_nothing(timeout=0.5)
    finally:
        await ws.disconnect()


async def test_staff_follow_a_clients_account_only_with_the_view_permission(
    alice_account: TradingAccount, operator: User, quotes: QuoteSetter
) -> None:
    no_role = await sync_to_async(make_role_user)("staff-without-role")
    ws = await connect(no_role)
    try:
        frame = await subscribe(ws, f"account:{alice_account.number}")
        assert (frame["type"], frame["code"]) == ("error", "unknown_channel")
    finally:
        await ws.disconnect()
    ws = await connect(operator)
    try:
        frame = await subscribe(ws, f"account:{alice_account.number}")
        assert frame["type"] == "snapshot", frame
    finally:
        await ws.disconnect()
