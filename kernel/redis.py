"""Redis clients and key names. Every key lives under settings.REDIS_PREFIX."""

import asyncio
import weakref
from functools import cache
from typing import cast

import redis
import redis.asyncio as aioredis
from django.conf import settings

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def key(*parts: str) -> str:
    return ":".join((settings.REDIS_PREFIX, *parts))


@cache
def sync_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def async_client() -> aioredis.Redis:
    """One client per event loop (an asyncio connection belongs to the loop that opened it)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2
        )
    return client


def get(name: str) -> bytes | None:
    """GET through the sync client (redis-py types sync replies as maybe-awaitable; they are not)."""
    return cast(bytes | None, sync_client().get(name))


def mget(names: list[str]) -> list[bytes | None]:
    return cast(list[bytes | None], sync_client().mget(names)) if names else []
