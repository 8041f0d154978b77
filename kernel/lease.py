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
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kernel.redis import key

log = logging.getLogger(__name__)

# 1: renewed. 0: the key is gone and was set again for this token. -1: another token holds it.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 0 end
return -1
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


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
    ) -> None:
        self.client, self.key, self.ttl_ms = client, key("lease", name), int(ttl_s * 1000)
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
                if await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                    self.valid_until = sent + self.ttl_s
                    log.info("lease %s acquired by %s", self.key, self.token)
                    return
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

    async def renew(self) -> None:
        """One renewal. Raises LeaseLost if another token holds the lease, RedisError if Redis did
        not answer (the lease stays valid until `valid_until`)."""
        sent = self.clock()
        result = int(await self.client.eval(_RENEW, 1, self.key, self.token, str(self.ttl_ms)))  # type: ignore[misc]
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
