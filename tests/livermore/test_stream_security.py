"""/ws/v1/stream: who may connect, and the first vertical slice of quotes to an authenticated client."""

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from livermore.asgi import application
from marketdata.demo import demo_seed
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.publisher import QuotePublisher
from marketdata.quotes import Quote, now_ns

pytestmark = [pytest.mark.django_db(transaction=True)]
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def communicator(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/v1/stream", headers=[(b"host", b"127.0.0.1:8000"), *headers]
    )


def bearer(user: Any) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())


async def test_it_refuses_a_foreign_origin(alice: Any) -> None:
    ws = communicator((b"origin", b"https://evil.example"), bearer(alice))
    connected, _ = await ws.connect()
    assert not connected
    await ws.disconnect()


async def test_it_refuses_a_bad_bearer_token_at_the_handshake() -> None:
    ws = communicator(ORIGIN, (b"authorization", b"Bearer not-a-token"))
    connected, _ = await ws.connect()
    assert not connected
    await ws.disconnect()


async def test_it_closes_an_anonymous_connection_that_subscribes() -> None:
    ws = communicator(ORIGIN)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD"]})
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "unauthenticated"
    assert (await ws.receive_output())["code"] == 4401
    await ws.disconnect()


async def test_it_closes_a_connection_that_does_not_authenticate_in_time(settings: Any) -> None:
    settings.STREAM_AUTH_TIMEOUT_S = 0.2
    ws = communicator(ORIGIN)
    assert (await ws.connect())[0]
    frame = await ws.receive_json_from(timeout=2)
    assert (frame["type"], frame["code"]) == ("error", "unauthenticated")
    assert (await ws.receive_output())["code"] == 4401
    await ws.disconnect()


async def test_a_connection_that_authenticates_in_time_stays_open(alice: Any, settings: Any) -> None:
    settings.STREAM_AUTH_TIMEOUT_S = 0.2
    ws = communicator()
    await ws.connect()
    await ws.send_json_to({"type": "auth", "token": str(AccessToken.for_user(alice))})
    assert (await ws.receive_json_from())["type"] == "authenticated"
    await asyncio.sleep(0.4)
    await ws.send_json_to({"type": "ping", "id": 1})
    assert await ws.receive_json_from() == {"type": "pong", "id": 1}
    await ws.disconnect()


async def test_it_rejects_an_expired_token_in_the_auth_frame(alice: Any) -> None:
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=-settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"])
    ws = communicator(ORIGIN)
    await ws.connect()
    await ws.send_json_to({"type": "auth", "token": str(token)})
    assert (await ws.receive_json_from())["code"] == "invalid_token"
    assert (await ws.receive_output())["code"] == 4401
    await ws.disconnect()


async def test_it_sends_errors_for_malformed_frames_and_unknown_channels(alice: Any) -> None:
    await sync_to_async(demo_seed)()
    ws = communicator(ORIGIN, bearer(alice))
    await ws.connect()
    await ws.send_to(text_data="{not json")
    assert (await ws.receive_json_from())["code"] == "malformed"
    await ws.send_json_to({"type": "subscribe", "channels": ["quotes:NOPE"]})
    frame = await ws.receive_json_from()
    assert (frame["code"], frame["channel"]) == ("unknown_channel", "quotes:NOPE")
    await ws.disconnect()


def quote(bid: str, ask: str) -> Quote:
    ts = now_ns()
    return Quote(symbol="EURUSD", venue="sim", bid=Decimal(bid), ask=Decimal(ask), venue_ts=ts, recv_ts=ts)


async def expect_frame(ws: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return frame


async def stream_quotes_to(ws: WebsocketCommunicator) -> None:
    """The market path in-process: LP manager -> publisher -> Redis ticker cache and channel layer ->
    this process's stream hub -> consumer."""
    publisher = QuotePublisher()
    manager = LPManager({"sim": VenueSettings(priority=10, stale_after_ms=5000)}, outputs=[publisher])
    task = asyncio.create_task(publisher.run())
    try:
        manager.on_quote(quote("1.10000", "1.10020"))
        await asyncio.sleep(0.3)  # the first quote is in the ticker cache before we subscribe
        await ws.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD"]})
        snapshot = await expect_frame(ws, "snapshot")
        assert snapshot["channel"] == "quotes:EURUSD"
        [first] = snapshot["data"]
        assert (first["symbol"], first["bid"], first["ask"], first["seq"]) == (
            "EURUSD",
            "1.10000",
            "1.10020",
            1,
        )
        manager.on_quote(quote("1.10010", "1.10030"))
        manager.on_quote(quote("1.10020", "1.10040"))
        updates = [await expect_frame(ws, "quote"), await expect_frame(ws, "quote")]
        assert [u["data"]["seq"] for u in updates] == [2, 3]
        assert [u["data"]["bid"] for u in updates] == ["1.10010", "1.10020"]
        assert all(u["channel"] == "quotes:EURUSD" and u["data"]["ts"] for u in updates)
    finally:
        task.cancel()


async def test_a_jwt_client_gets_a_snapshot_then_each_update(alice: Any) -> None:
    await sync_to_async(demo_seed)()
    ws = communicator(ORIGIN, bearer(alice))
    assert (await ws.connect())[0]
    await stream_quotes_to(ws)
    await ws.disconnect()


async def test_a_client_may_authenticate_with_a_frame(alice: Any) -> None:
    await sync_to_async(demo_seed)()
    ws = communicator()  # a non-browser client sends no Origin
    await ws.connect()
    await ws.send_json_to({"type": "auth", "token": str(AccessToken.for_user(alice))})
    assert (await ws.receive_json_from())["type"] == "authenticated"
    await stream_quotes_to(ws)
    await ws.disconnect()


async def test_an_admin_session_authenticates_the_browser(operator: Any) -> None:
    await sync_to_async(demo_seed)()
    client = Client()
    await sync_to_async(client.force_login)(operator)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    ws = communicator(ORIGIN, (b"cookie", cookie.encode()))
    assert (await ws.connect())[0]
    await stream_quotes_to(ws)
    await ws.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        "https://127.0.0.1:8000",  # another scheme
        "http://127.0.0.1:8001",  # another port
        "http://127.0.0.1",  # the default port is another port
        "http://127.0.0.1.evil.example:8000",
        "null",
        "http://[",
    ],
)
async def test_the_origin_must_match_scheme_host_and_port_exactly(alice: Any, origin: str) -> None:
    ws = communicator((b"origin", origin.encode()), bearer(alice))
    connected, _ = await ws.connect()
    assert not connected
    await ws.disconnect()


async def test_a_trusted_origin_matches_exactly_too(alice: Any, settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.desk.example"]
    for origin, allowed in [
        ("https://app.example.com", True),
        ("https://app.example.com:443", True),
        ("https://ops.desk.example", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://desk.example", False),
    ]:
        ws = communicator((b"origin", origin.encode()), bearer(alice))
        assert (await ws.connect())[0] is allowed, origin
        await ws.disconnect()


async def test_a_deactivated_users_open_stream_is_closed_at_once(alice: Any) -> None:
    await sync_to_async(demo_seed)()
    ws = communicator(ORIGIN, bearer(alice))
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD"]})
    assert (await ws.receive_json_from())["type"] == "snapshot"

    def deactivate() -> None:
        alice.is_active = False
        alice.save()

    await sync_to_async(deactivate)()
    while (message := await ws.receive_output(timeout=5))["type"] == "websocket.send":
        last = message
    assert '"code":"revoked"' in last["text"]
    assert message == {"type": "websocket.close", "code": 4401}
    await ws.disconnect()


async def test_a_token_from_before_a_password_change_is_refused(alice: Any) -> None:
    token = str(AccessToken.for_user(alice))

    def change_password() -> None:
        alice.set_password("a new password, long enough")
        alice.save()

    await sync_to_async(change_password)()
    ws = communicator(ORIGIN, (b"authorization", f"Bearer {token}".encode()))
    assert not (await ws.connect())[0]
    await ws.disconnect()
    ws = communicator(ORIGIN)
    await ws.connect()
    await ws.send_json_to({"type": "auth", "token": token})
    assert (await ws.receive_json_from())["code"] == "invalid_token"
    assert (await ws.receive_output())["code"] == 4401
    await ws.disconnect()


async def test_a_password_change_closes_the_users_open_stream_at_once(alice: Any) -> None:
    await sync_to_async(demo_seed)()
    ws = communicator(ORIGIN, bearer(alice))
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD"]})
    assert (await ws.receive_json_from())["type"] == "snapshot"

    def change_password() -> None:
        alice.set_password("a new password, long enough")
        alice.save()

    await sync_to_async(change_password)()
    while (message := await ws.receive_output(timeout=5))["type"] == "websocket.send":
        last = message
    assert '"code":"revoked"' in last["text"]
    assert message == {"type": "websocket.close", "code": 4401}
    await ws.disconnect()
