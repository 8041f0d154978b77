"""DRF throttles kept in Redis with one atomic round trip per check.

DRF's SimpleRateThrottle keeps each caller's request history in the Django cache: a GET and a SET per
throttle per request (two throttles on an order: four Redis round trips, each through a new client
object), and two concurrent requests can both read the same history and both pass. These keep DRF's
rates, scopes, cache keys and sliding-window semantics (at most `num_requests` in any `duration`
seconds), as a sorted set of request times trimmed, counted and appended by one Lua script.

A per-user rate for one kind of write (order submission, portfolio sync) is set in
settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] under the view's `throttle_scope`.
"""

import uuid
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from redis.commands.core import Script
from rest_framework import throttling
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.settings import api_settings

from kernel.clientip import client_ip
from kernel.redis import key, sync_client

if TYPE_CHECKING:  # rest_framework.views imports the throttle classes named in the settings
    from rest_framework.views import APIView

# KEYS[1] the caller's history; ARGV: now, window (s), limit, a unique member for this request.
# Returns {1, count} when allowed (and recorded), {0, oldest time still in the window} when not.
_SLIDING_WINDOW = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  return {0, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return {1, count + 1}
"""


@cache
def _script() -> Script:
    return sync_client().register_script(_SLIDING_WINDOW)


class RedisRateThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's check and wait, atomically in Redis."""

    retry_after: float | None = None
    num_requests: int  # parsed from the rate by SimpleRateThrottle.__init__
    duration: int

    def allow_request(self, request: Request, view: "APIView") -> bool:
        if self.rate is None:
            return True
        cache_key = self.get_cache_key(request, view)
        if cache_key is None:
            return True
        now = self.timer()
        allowed, value = cast(
            "list[Any]",
            _script()(
                keys=[key("throttle", cache_key)],
                args=[repr(now), self.duration, self.num_requests, uuid.uuid4().hex],
            ),
        )
        if allowed:
            return True
        self.retry_after = max(self.duration - (now - float(value)), 0.0)
        return False

    def wait(self) -> float | None:
        return self.retry_after

    def get_ident(self, request: Request) -> str:
        """The web server's client address (kernel/clientip.py), never a raw X-Forwarded-For."""
        return client_ip(request)


class AnonRateThrottle(throttling.AnonRateThrottle, RedisRateThrottle):
    pass


class UserRateThrottle(throttling.UserRateThrottle, RedisRateThrottle):
    pass


class ScopedRateThrottle(throttling.ScopedRateThrottle, RedisRateThrottle):
    pass


class ScopedWriteThrottle(ScopedRateThrottle):
    """ScopedRateThrottle for writes only: reads of the same view pass."""

    def allow_request(self, request: Request, view: "APIView") -> bool:
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)


def throttles_with(*extra: type[throttling.BaseThrottle]) -> list[type[throttling.BaseThrottle]]:
    """The default throttles plus `extra` (a view's throttle_classes replaces the defaults)."""
    defaults = cast("list[type[throttling.BaseThrottle]]", api_settings.DEFAULT_THROTTLE_CLASSES)
    return [*defaults, *extra]
