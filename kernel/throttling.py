"""DRF throttles kept in Redis with one atomic round trip per check.

DRF's SimpleRateThrottle keeps each caller's request history in the Django cache: a GET and a SET per
throttle per request (two throttles on an order: four Redis round trips, each through a new client
object), and two concurrent requests can both read the same history and both pass. These keep DRF's
rates, scopes, cache keys and sliding-window semantics (at most `num_requests` in any `duration`
seconds), as a sorted set of request times trimmed, counted and appended by one Lua script.

A per-user rate for one kind of write (order submission, portfolio sync) is set in
settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] under the view's `throttle_scope`.
"""

import logging
import time
import uuid
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from redis.commands.core import Script
from redis.exceptions import RedisError
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


log = logging.getLogger(__name__)

_FAIL_OPEN_LOG_EVERY_S = 10.0
_fail_open = {"logged_at": 0.0, "passed": 0}


def _failed_open(exc: RedisError) -> bool:
    """Redis did not answer: the request passes (an outage of the rate store stops no trading), and
    the outage is logged at most every few seconds with how many requests passed unthrottled."""
    _fail_open["passed"] += 1
    now = time.monotonic()
    if now - _fail_open["logged_at"] >= _FAIL_OPEN_LOG_EVERY_S:
        log.warning(
            "throttle: Redis unavailable (%s: %s); %d request(s) passed unthrottled",
            type(exc).__name__,
            exc,
            _fail_open["passed"],
        )
        _fail_open["logged_at"], _fail_open["passed"] = now, 0
    return True


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
        try:
            allowed, value = cast(
                "list[Any]",
                _script()(
                    keys=[key("throttle", cache_key)],
                    args=[repr(now), self.duration, self.num_requests, uuid.uuid4().hex],
                ),
            )
        except RedisError as exc:
            return _failed_open(exc)
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
