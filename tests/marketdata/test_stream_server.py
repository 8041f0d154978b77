"""/ws/v1/stream through a real stream server process (daphne with flow control) and a real
WebSocket client: handshake security, end-to-end quotes, and a slow consumer being closed."""

import asyncio
import json
import socket
import time
import uuid

import pytest
import websockets
from rest_framework_simplejwt.tokens import AccessToken

from kernel.redis import sync_client
from marketdata.consumers import CLOSE_SLOW_CONSUMER
from marketdata.demo import demo_seed
from tests.marketdata.streamkit import Market, stream_server
from tests.support.stack import database_url
from tests.support.users import make_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD", "ETHUSD")


@pytest.fixture
def server_env(settings):
    settings.REDIS_PREFIX = f"test-stream-{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": database_url(),
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        "STREAM_SLOW_CONSUMER_S": "1",
        "STREAM_QUEUE_FRAMES": "100",
    }
    yield env
    client = sync_client()
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        client.delete(key)


def small_buffer(base: str) -> socket.socket:
    """A client socket with a small receive buffer, so a client that stops reading shows quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    return sock


@pytest.fixture
def token():
    demo_seed()
    user = make_client("alice")
    return str(AccessToken.for_user(user))


async def test_a_foreign_origin_is_refused_at_the_handshake(server_env, tmp_path):
    with stream_server(server_env, tmp_path / "server.log") as base:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{base}/ws/v1/stream", origin="https://evil.example")
        assert refused.value.response.status_code == 403


async def test_quotes_flow_from_the_lp_manager_to_a_real_client(server_env, token, tmp_path):
    with stream_server(server_env, tmp_path / "server.log") as base:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            Market() as market,
            websockets.connect(f"{base}/ws/v1/stream", additional_headers=headers) as ws,
        ):
            await ws.send(json.dumps({"type": "subscribe", "channels": ["quotes:*"], "conflate": False}))
            assert json.loads(await ws.recv())["type"] == "snapshot"
            for i in range(20):
                market.quote("EURUSD", f"1.085{i:02d}", f"1.086{i:02d}")
            seqs = [json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["seq"] for _ in range(20)]
            assert seqs == list(range(1, 21))
            await ws.send(json.dumps({"type": "ping", "id": 3}))
            assert json.loads(await ws.recv()) == {"type": "pong", "id": 3}


async def test_a_client_that_stops_reading_is_closed_as_slow_while_others_keep_up(
    server_env, token, tmp_path
):
    log = tmp_path / "server.log"
    with stream_server(server_env, log) as base:
        url, headers = f"{base}/ws/v1/stream", {"Authorization": f"Bearer {token}"}
        subscribe = json.dumps({"type": "subscribe", "channels": ["quotes:*"], "conflate": False})
        async with (
            Market() as market,
            websockets.connect(url, additional_headers=headers, max_queue=4, sock=small_buffer(base)) as slow,
            websockets.connect(url, additional_headers=headers) as fast,
        ):
            for ws in (slow, fast):
                await ws.send(subscribe)
                assert json.loads(await ws.recv())["type"] == "snapshot"
            received: list[int] = []

            async def read_fast() -> None:
                async for raw in fast:
                    received.append(json.loads(raw)["data"]["seq"])

            reader = asyncio.create_task(read_fast())
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < 3 and slow.close_code is None:
                for symbol in SYMBOLS:
                    market.quote(symbol, "1.00000", "1.00010")
                sent += 1
                await asyncio.sleep(0.0005)
            await market.settle()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await slow.recv()
            assert closed.value.rcvd is None or closed.value.rcvd.code == CLOSE_SLOW_CONSUMER
            await asyncio.sleep(0.5)
            reader.cancel()
            assert len(received) >= sent * len(SYMBOLS) * 0.9  # the fast client was not held back
            assert fast.close_code is None
    assert "closing slow consumer" in log.read_text()
