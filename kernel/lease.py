"""A leader lease on Redis (SET NX PX, renewed while alive) so exactly one market loop, beat or FIX
engine runs, and one that survives a Redis outage shorter than the lease.

The holder measures the lease on its own monotonic clock from the moment it sent the request that
set or renewed it: the key cannot expire in Redis before `valid_until`, so the holder may go on
leading until then even when Redis does not answer. Renewal is retried with backoff; `keep()` raises
LeaseLost only when the lease has really gone: Redis says another token holds it, or `valid_until`
passed without a renewal getting through (another process may have taken it since).

A Redis that restarted empty lost the key: the holder sets it again if nobody took it in between
(still within its own validity, nobody else can have been told they lead, unless a standby set it
first, and then this one steps down).

Fencing: each acquisition gets a number, `fence`, above every earlier holder's (Redis INCR on
`fence:NAME` in the same script as the SET NX, then recorded in PostgreSQL's kernel_lease_fence with
GREATEST, so a Redis that restarted empty cannot make it go backwards). The holder's writes carry it
and are refused once a higher one is recorded (fence_check, the publisher's script): a holder frozen
past its lease that wakes up cannot write a row or send a frame, whatever its own clock says.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from django.db import DatabaseError, close_old_connections, connection, transaction
from redis.exceptions import RedisError

from kernel.redis import key

log = logging.getLogger(__name__)

# 1: renewed. 0: the key is gone and was set again for this token, with its fence (KEYS[2]) if the
# fence went backwards too. -1: another token holds it.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if not holder then
    redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
    if tonumber(redis.call('get', KEYS[2]) or '0') < tonumber(ARGV[3]) then
        redis.call('set', KEYS[2], ARGV[3])
    end
    return 0
end
return -1
"""
# The fence number of a new acquisition, or 0 when another token holds the lease.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('incr', KEYS[2]) end
return 0
"""
# Raise the fence to the durable number (a Redis that restarted empty starts again from 1).
_FENCE_RAISE = """
if tonumber(redis.call('get', KEYS[1]) or '0') < tonumber(ARGV[1]) then
    redis.call('set', KEYS[1], ARGV[1])
end
return 1
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


FENCE_TABLE = "kernel_lease_fence"  # (name, token): the highest fence handed out per lease


def fence_record(name: str, fence: int) -> int:
    """Record an acquisition's fence in PostgreSQL; returns the fence to use: above every number
    recorded before, whatever Redis said. Waits (at most lock_timeout) for a write in flight under
    the previous fence (fence_check holds its row FOR SHARE) and raises if it does not end."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '2s'")
        cursor.execute(
            f"INSERT INTO {FENCE_TABLE} (name, token) VALUES (%s, %s) ON CONFLICT (name) "  # noqa: S608 (a constant)
            f"DO UPDATE SET token = GREATEST({FENCE_TABLE}.token + 1, EXCLUDED.token) RETURNING token",
            [name, fence],
        )
        return int(cursor.fetchone()[0])


FENCE_CHECK_SQL = f"SELECT token FROM {FENCE_TABLE} WHERE name = %s FOR SHARE"  # noqa: S608 (a constant)


def fence_check(cursor: Any, name: str, fence: int) -> bool:
    """In the transaction of a holder's write: True if `fence` is still the newest recorded (or none
    is: no holder ever recorded one). The row stays locked until the transaction ends, so a new
    holder's fence_record waits for the write (and then sees it) instead of passing it."""
    cursor.execute(FENCE_CHECK_SQL, [name])
    row = cursor.fetchone()
    return row is None or int(row[0]) <= fence


class StaleFence(Exception):
    """A write of a holder whose fence a newer acquisition superseded: refused."""


class LeaseLost(Exception):
    """The lease expired or another process holds it: the holder must stop leading."""


class Lease:
    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        *,
        ttl_s: float,
        retry_max_s: float = 0.5,
        poll_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        record: Callable[[str, int], int] | None = None,
    ) -> None:
        """`record` (fence_record in the processes) makes the fence durable: called in a thread at
        each acquisition, it returns the fence to use."""
        self.client, self.key, self.ttl_ms = client, key("lease", name), int(ttl_s * 1000)
        self.name, self.fence_key, self.fence = name, key("fence", name), 0
        self.record = record
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.retry_max_s = retry_max_s
        self.poll_s = poll_s  # a standby tries this often: it takes over within poll_s of the expiry
        self.clock = clock
        self.valid_until = 0.0  # on `clock`: the lease is ours at least until then
        self.renewal_failures = 0

    @property
    def ttl_s(self) -> float:
        return self.ttl_ms / 1000

    def valid(self) -> bool:
        return self.clock() < self.valid_until

    async def acquire(self) -> None:
        """Wait until the lease is ours (through Redis outages: retried with backoff)."""
        waited = failing = False
        while True:
            sent = self.clock()
            try:
                keys = (self.key, self.fence_key)
                fence = int(await self.client.eval(_ACQUIRE, 2, *keys, self.token, str(self.ttl_ms)))  # type: ignore[misc]
                if fence:
                    self.valid_until = sent + self.ttl_s
                    if await self._record(fence):
                        log.info("lease %s acquired by %s, fence %d", self.key, self.token, self.fence)
                        return
                    await asyncio.sleep(min(self.ttl_s / 3, self.retry_max_s))
                    continue
                if not waited:
                    log.info("lease %s held by %s; waiting", self.key, await self.client.get(self.key))
                    waited = True
                failing = False
                await asyncio.sleep(min(self.poll_s, self.ttl_s / 3))
            except RedisError as exc:
                if not failing:
                    log.warning("lease %s: Redis unavailable while acquiring (%s); retrying", self.key, exc)
                    failing = True
                await asyncio.sleep(min(self.ttl_s / 3, self.retry_max_s))

    async def _record(self, fence: int) -> bool:
        """Make the new fence durable. False (the lease given back) when PostgreSQL does not take it:
        a holder whose fence is not recorded could not write anything."""
        if self.record is None:
            self.fence = fence
            return True
        try:
            durable = await asyncio.to_thread(_in_thread, self.record, self.name, fence)
            if durable != fence:
                await self.client.eval(_FENCE_RAISE, 1, self.fence_key, str(durable))  # type: ignore[misc]
        except (DatabaseError, RedisError, OSError) as exc:
            log.warning(
                "lease %s: fence %d not recorded (%s: %s); given back",
                self.key,
                fence,
                type(exc).__name__,
                exc,
            )
            await self.release()
            return False
        self.fence = durable
        return True

    async def renew(self) -> None:
        """One renewal. Raises LeaseLost if another token holds the lease, RedisError if Redis did
        not answer (the lease stays valid until `valid_until`)."""
        sent = self.clock()
        args = (self.key, self.fence_key, self.token, str(self.ttl_ms), str(self.fence))
        result = int(await self.client.eval(_RENEW, 2, *args))  # type: ignore[misc]
        if result < 0:
            self.valid_until = 0.0
            raise LeaseLost(f"lease {self.key} is held by another process")
        if result == 0:
            log.warning("lease %s was gone from Redis (a restart?): set again for %s", self.key, self.token)
        self.valid_until = sent + self.ttl_s

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled. Raises LeaseLost once the lease is lost; a
        renewal Redis did not answer is retried with backoff while the lease is still valid."""
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            delay = 0.1
            while True:
                if not self.valid():
                    raise LeaseLost(f"lease {self.key} expired: no renewal got through in {self.ttl_s:g}s")
                try:
                    await asyncio.wait_for(self.renew(), timeout=max(self.valid_until - self.clock(), 0.01))
                except (RedisError, TimeoutError, OSError) as exc:
                    self.renewal_failures += 1
                    log.warning(
                        "lease %s: renewal failed (%s: %s); valid for %.1fs more",
                        self.key,
                        type(exc).__name__,
                        exc,
                        max(self.valid_until - self.clock(), 0.0),
                    )
                    await asyncio.sleep(min(delay, max(self.valid_until - self.clock(), 0.0)))
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                break

    async def release(self) -> None:
        """Give the lease up (shutdown). Never raises: a Redis that does not answer lets it expire."""
        self.valid_until = 0.0
        try:
            async with asyncio.timeout(2):
                await self.client.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning(
                "lease %s not released (%s: %s): it expires in %gs",
                self.key,
                type(exc).__name__,
                exc,
                self.ttl_s,
            )


def _in_thread(record: Callable[[str, int], int], name: str, fence: int) -> int:
    close_old_connections()  # a connection a database restart broke is dropped, not reused
    try:
        return record(name, fence)
    finally:
        connection.close()
