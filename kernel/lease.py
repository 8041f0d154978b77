"""A leader lease on Redis (SET NX PX, renewed while alive) so exactly one market loop or beat runs."""

import asyncio
import logging
import os
import socket
import uuid

import redis.asyncio as aioredis

from kernel.redis import key

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class Lease:
    def __init__(self, client: aioredis.Redis, name: str, *, ttl_s: float) -> None:
        self.client, self.key, self.ttl_ms = client, key("lease", name), int(ttl_s * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def acquire(self) -> None:
        """Wait until the lease is ours."""
        waited = False
        while not await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if not waited:
                log.info("lease %s held by %s; waiting", self.key, await self.client.get(self.key))
                waited = True
            await asyncio.sleep(self.ttl_ms / 3000)
        log.info("lease %s acquired by %s", self.key, self.token)

    async def keep(self) -> None:
        """Renew until cancelled; raises if the lease was lost (the caller must stop leading)."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if not await self.client.eval(_RENEW, 1, self.key, self.token, str(self.ttl_ms)):  # type: ignore[misc]
                raise RuntimeError(f"lease {self.key} lost")

    async def release(self) -> None:
        await self.client.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
