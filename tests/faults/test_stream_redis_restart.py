"""A WebSocket subscriber across a Redis restart, on the real processes (`web` and `market` under
the supervisor) and a private redis-server killed and started again, empty, two seconds later: the
quotes come again on the same connection."""

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.db import connections
from rest_framework_simplejwt.tokens import AccessToken

from marketdata.demo import demo_seed
from tests.support.servers import private_redis
from tests.support.stack import run_stack
from tests.support.users import make_client

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OUTAGE_S = 2.0


def desk() -> str:
    """The demo instruments and a client's access token."""
    demo_seed()
    return str(AccessToken.for_user(make_client("alice", password=None)))


async def test_a_subscriber_gets_quotes_again_on_the_same_connection_after_a_redis_restart(
    tmp_path: Path,
) -> None:
    token = await sync_to_async(desk)()
    await sync_to_async(connections.close_all)()  # that thread's connection: the test database is dropped
    with (
        private_redis(tmp_path) as redis_server,
        run_stack(
            tmp_path, "web", "market", REDIS_URL=redis_server.url, CELERY_BROKER_URL=redis_server.url
        ) as stack,
    ):
        await asyncio.to_thread(stack.wait_http, "/readyz", timeout=60)
        url = stack.url.replace("http://", "ws://") + "/ws/v1/stream"
        quotes: list[float] = []  # when each quote frame arrived
        back = float("inf")  # when Redis was started again
        again = asyncio.Event()
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:

            async def read() -> None:
                async for raw in ws:
                    if json.loads(raw).get("type") == "quote":
                        quotes.append(time.monotonic())
                        if quotes[-1] > back:
                            again.set()

            await ws.send(json.dumps({"type": "subscribe", "channels": ["quotes:*"], "conflate": False}))
            reader = asyncio.create_task(read())
            await asyncio.sleep(2)
            assert quotes, "no quote before the restart"
            redis_server.kill()
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(redis_server.start)
            back = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(again.wait(), 20)
            close_code = ws.close_code
            reader.cancel()
        stack.stop()
    after = [t for t in quotes if t > back]
    recovered_s = f"{after[0] - back:.2f}" if after else None
    print(
        f"stream across a redis restart: quotes again on the same connection {recovered_s}s after Redis "
        f"returned; close code {close_code}; quote frames {len(quotes)}"
    )
    assert close_code is None  # the connection stayed open
    assert after, "no quote on the same connection after the restart"
