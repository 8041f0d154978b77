"""The leader lease through Redis outages, on a private redis-server that the test kills and starts
again on the same port (empty: no persistence)."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kernel.lease import Lease, LeaseLost
from tests.support.servers import PrivateRedis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def client(server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    yield client
    await client.aclose()


async def test_a_holder_keeps_leading_through_an_outage_shorter_than_its_lease(server, client):
    lease = Lease(client, "market", ttl_s=4)
    await lease.acquire()
    keep = asyncio.create_task(lease.keep())
    await asyncio.sleep(0.2)
    server.kill()
    await asyncio.to_thread(time.sleep, 2.0)  # a two-second outage: renewals fail
    assert not keep.done() and lease.valid()
    await asyncio.to_thread(server.start)  # back, empty: the key is set again for the holder
    await asyncio.sleep(1.5)
    assert not keep.done()
    assert lease.renewal_failures >= 1
    assert await client.get(lease.key) == lease.token.encode()
    keep.cancel()


async def test_a_holder_steps_down_only_once_its_lease_has_really_expired(server, client):
    lease = Lease(client, "market", ttl_s=2)
    await lease.acquire()
    expires = lease.valid_until
    keep = asyncio.create_task(lease.keep())
    server.kill()
    with pytest.raises(LeaseLost, match="expired"):
        await asyncio.wait_for(keep, timeout=5)
    assert expires <= time.monotonic() < expires + 1.0  # not before its time, and promptly after


async def test_a_standby_that_took_the_lease_after_a_restart_wins_and_the_old_holder_steps_down(
    server, client
):
    old, standby = Lease(client, "market", ttl_s=3), Lease(client, "market", ttl_s=3)
    await old.acquire()
    keep = asyncio.create_task(old.keep())
    server.kill()
    await asyncio.to_thread(server.start)
    await asyncio.wait_for(standby.acquire(), timeout=2)  # the key was lost with the restart
    with pytest.raises(LeaseLost, match="held by another"):
        await asyncio.wait_for(keep, timeout=3)
    assert await client.get(old.key) == standby.token.encode()


async def test_a_standby_waits_through_an_outage_and_takes_the_lease_when_redis_returns(server, client):
    standby = Lease(client, "beat", ttl_s=1.5, retry_max_s=0.2)
    server.kill()
    acquire = asyncio.create_task(standby.acquire())
    await asyncio.sleep(1.0)
    assert not acquire.done()
    await asyncio.to_thread(server.start)
    await asyncio.wait_for(acquire, timeout=3)
    assert standby.valid()


async def test_a_release_redis_does_not_answer_is_logged_not_raised(server, client, caplog):
    lease = Lease(client, "fix", ttl_s=2)
    await lease.acquire()
    server.kill()
    with caplog.at_level(logging.WARNING, logger="kernel.lease"):
        await lease.release()
    assert "not released" in caplog.text
    assert not lease.valid()
