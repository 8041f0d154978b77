"""/ws/v1/stream request handling over real WebSocket connections (WebsocketCommunicator against
livermore.asgi.application): authentication, error frames, ping/pong, options."""

import uuid

import pytest
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from livermore.asgi import application
from marketdata.consumers import CLOSE_UNAUTHENTICATED
from tests.marketdata.streamkit import connected, frames_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def own_prefix(settings):
    settings.REDIS_PREFIX = f"test-stream-{uuid.uuid4().hex[:8]}"


async def test_it_closes_an_anonymous_connection_with_4401_after_an_error_frame():
    async with connected() as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:*"]})
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "unauthenticated"
        assert await comm.receive_output() == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_it_refuses_a_bad_bearer_token_at_the_handshake():
    comm = WebsocketCommunicator(application, "/ws/v1/stream", headers=[(b"authorization", b"Bearer nope")])
    ok, code = await comm.connect()
    assert not ok
    assert code == CLOSE_UNAUTHENTICATED
    await comm.disconnect()


async def test_it_refuses_a_foreign_origin_at_the_handshake(alice):
    comm = WebsocketCommunicator(application, "/ws/v1/stream", headers=[(b"origin", b"https://evil.example")])
    ok, _ = await comm.connect()
    assert not ok
    await comm.disconnect()


async def test_it_authenticates_with_an_auth_frame(alice):
    async with connected() as comm:
        await comm.send_json_to({"type": "auth", "token": str(AccessToken.for_user(alice))})
        assert await comm.receive_json_from() == {"type": "authenticated", "user": "alice"}
        await comm.send_json_to({"type": "ping", "id": 7})
        assert await comm.receive_json_from() == {"type": "pong", "id": 7}


async def test_it_rejects_an_invalid_auth_frame_token_and_closes():
    async with connected() as comm:
        await comm.send_json_to({"type": "auth", "token": "forged"})
        error = await comm.receive_json_from()
        assert (error["type"], error["code"]) == ("error", "invalid_token")
        assert await comm.receive_output() == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_it_answers_ping_with_pong_carrying_the_id(alice):
    async with connected(alice) as comm:
        await comm.send_json_to({"type": "ping", "id": "abc"})
        assert await comm.receive_json_from() == {"type": "pong", "id": "abc"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"type": 5}', "malformed"),
        ('{"type": "subscribe"}', "malformed"),
        ('{"type": "subscribe", "channels": []}', "malformed"),
        ('{"type": "subscribe", "channels": "quotes:*"}', "malformed"),
        ('{"type": "subscribe", "channels": [1]}', "malformed"),
        ('{"type": "unsubscribe", "channels": {}}', "malformed"),
        ('{"type": "subscribe", "channels": ["weather:paris"]}', "unknown_channel"),
        ('{"type": "subscribe", "channels": ["quotes:NOPE"]}', "unknown_channel"),
        ('{"type": "subscribe", "channels": ["candles:EURUSD:7m"]}', "unknown_channel"),
        ('{"type": "subscribe", "channels": ["quotes:*"], "max_rate": 0}', "invalid_option"),
        ('{"type": "subscribe", "channels": ["quotes:*"], "max_rate": 1000}', "invalid_option"),
        ('{"type": "subscribe", "channels": ["quotes:*"], "max_rate": "5"}', "invalid_option"),
        ('{"type": "subscribe", "channels": ["quotes:*"], "conflate": "no"}', "invalid_option"),
        ('{"type": "dance"}', "unknown_type"),
    ],
)
async def test_it_answers_bad_frames_with_an_error_frame_and_keeps_serving(alice, raw, code):
    async with connected(alice) as comm:
        await comm.send_to(text_data=raw)
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["message"]
        await comm.send_json_to({"type": "ping", "id": 1})
        assert await comm.receive_json_from() == {"type": "pong", "id": 1}


async def test_it_answers_binary_frames_with_an_error(alice):
    async with connected(alice) as comm:
        await comm.send_to(bytes_data=b"\x00\x01")
        assert (await comm.receive_json_from())["code"] == "malformed"


async def test_it_reports_each_unknown_channel_and_subscribes_the_rest(alice):
    async with connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["nope:1", "quotes:*"]})
        error, snapshot = await frames_until(comm, 2)
        assert (error["code"], error["channel"]) == ("unknown_channel", "nope:1")
        assert (snapshot["type"], snapshot["channel"]) == ("snapshot", "quotes:*")


async def test_it_confirms_unsubscribe(alice):
    async with connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:*"]})
        await comm.receive_json_from()
        await comm.send_json_to({"type": "unsubscribe", "channels": ["quotes:*"]})
        assert await comm.receive_json_from() == {"type": "unsubscribed", "channel": "quotes:*"}
