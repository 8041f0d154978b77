"""DRF throttles kept in Redis with one atomic round trip per check.

DRF's SimpleRateThrottle keeps each caller's request history in the Django cache: a GET and a SET per
throttle per request (two throttles on an order: four Redis round trips, each through a new client
object), and two concurrent requests can both read the same history and both pass. These keep DRF's
rates, scopes, cache keys and sliding-window semantics (at most `num_requests` in any `duration`
seconds), as a sorted set of request times trimmed, counted and appended by one Lua script, which
checks all of a view's throttles in one round trip (a user's rate and a scope's, on an order). An
authenticator that answers from data kept under versions (kernel/versions.py) reads them in that same
round trip (`check_ahead`): the windows are checked only if the versions have not moved. A request
in a pinned block (kernel.versions.pinned: an order) reads its caches' versions in it too.

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
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.request import Request
from rest_framework.settings import api_settings

from kernel import versions
from kernel.clientip import client_ip
from kernel.redis import key, sync_client

if TYPE_CHECKING:  # rest_framework.views imports the throttle classes named in the settings
    from rest_framework.views import APIView

# KEYS: first the guards (data versions a caller relies on), then plain reads (versions the request
# reads anyway: an order's caches'), then the callers' histories. ARGV: the number of guards and of
# reads, the value expected of each guard, then now, a unique member for this request, then a window
# (s) and a limit per history. Returns the guards' and the reads' values, then per history "" when
# allowed (and recorded), else the oldest time still in the window; the histories only when every
# guard held.
_SLIDING_WINDOWS = """
local guards, reads = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
local held = true
for i = 1, guards + reads do
  out[i] = redis.call('GET', KEYS[i])
  if i <= guards and out[i] ~= ARGV[2 + i] then held = false end
end
if not held then
  return out
end
local now, member = tonumber(ARGV[guards + 3]), ARGV[guards + 4]
for i = guards + reads + 1, #KEYS do
  local at = 2 * (i - guards - reads) + guards + 3
  local window, limit = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    out[i] = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')[2]
  else
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('PEXPIRE', KEYS[i], math.ceil(window * 1000))
    out[i] = ''
  end
end
return out
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
    return sync_client().register_script(_SLIDING_WINDOWS)


Window = tuple[str, int, int]  # Redis key, window (s), limit


Answers = dict[str, float | None]  # per window's key: its oldest time when over the limit, else None


def _call(guards: list[tuple[str, bytes]], windows: list[Window], now: float) -> list[bytes | None]:
    """The script's answers for `guards` and `windows`, without the reads: the seeded caches' versions
    of the thread's pinned block that it has not read yet are read with them (kernel.versions)."""
    reads = versions.unread_hot()
    answers = cast(
        "list[bytes | None]",
        _script()(
            keys=[*(name for name, _ in guards), *versions.keys_of(reads), *(name for name, _, _ in windows)],
            args=[
                len(guards),
                len(reads),
                *(value for _, value in guards),
                repr(now),
                uuid.uuid4().hex,
                *(v for _, d, n in windows for v in (d, n)),
            ],
        ),
    )
    if reads:
        versions.supply(reads, answers[len(guards) : len(guards) + len(reads)])
        del answers[len(guards) : len(guards) + len(reads)]
    return answers


def _answers(windows: list[Window], answers: list[bytes | None]) -> Answers:
    return {name: float(a) if a else None for (name, _, _), a in zip(windows, answers, strict=True)}


def _check(windows: list[Window], now: float) -> Answers | RedisError:
    """Each window's oldest time when the request is over its limit, None when it passed (recorded)."""
    try:
        return _answers(windows, _call([], windows, now))
    except RedisError as exc:
        return exc


def _windows(request: Request, view: "APIView") -> list[Window]:
    return [
        w
        for t in view.get_throttles()
        if isinstance(t, RedisRateThrottle) and (w := t.window(request, view)) is not None
    ]


def check_ahead(request: Request, user: Any, guards: list[tuple[str, bytes]]) -> list[bytes | None] | None:
    """For an authenticator answering from data kept under versions (`guards`: their Redis keys and the
    versions kept): reads the versions and, when none has moved, checks the view's throttles for
    `user` in the same round trip, leaving the throttles their answers. Returns the versions read, or
    None when it did not ask: Redis did not answer, or the view checks more than authentication
    before its throttles (counting a request first would count one that it refuses)."""
    view = request.parser_context.get("view") if request.parser_context else None
    if view is None or not all(type(p) is IsAuthenticated for p in view.get_permissions()):
        return None
    request.user = user  # the throttles key on it; DRF sets it again when authentication returns
    windows = _windows(request, view)
    try:
        answers = _call(guards, windows, time.time())
    except RedisError:
        return None
    if len(answers) > len(guards):  # every guard held: the windows were checked
        request._throttle_answers = _answers(windows, answers[len(guards) :])  # type: ignore[attr-defined]
    return answers[: len(guards)]


class RedisRateThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's check and wait, atomically in Redis. The first of a view's throttles to
    run checks every one of them at once and leaves the others their answers on the request."""

    retry_after: float | None = None
    num_requests: int  # parsed from the rate by SimpleRateThrottle.__init__
    duration: int

    def window(self, request: Request, view: "APIView") -> Window | None:
        """What this throttle checks for the request, or None when it lets it pass unchecked."""
        if self.rate is None:
            return None
        cache_key = self.get_cache_key(request, view)
        if cache_key is None:
            return None
        return key("throttle", cache_key), self.duration, self.num_requests

    def allow_request(self, request: Request, view: "APIView") -> bool:
        window = self.window(request, view)
        if window is None:
            return True
        now = self.timer()
        pending: Answers | RedisError | None = getattr(request, "_throttle_answers", None)
        if pending is None and hasattr(view, "get_throttles"):
            pending = _check(_windows(request, view), now)
            request._throttle_answers = pending  # type: ignore[attr-defined]
        if isinstance(pending, RedisError):
            return _failed_open(pending)
        if pending is None or window[0] not in pending:
            answer = _check([window], now)
        else:
            answer = {window[0]: pending.pop(window[0])}  # taken: a later check of the request asks again
            if not pending:
                del request._throttle_answers  # type: ignore[attr-defined]
        if isinstance(answer, RedisError):
            return _failed_open(answer)
        oldest = answer[window[0]]
        if oldest is None:
            return True
        self.retry_after = max(self.duration - (now - oldest), 0.0)
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
    def window(self, request: Request, view: "APIView") -> Window | None:
        # DRF's ScopedRateThrottle reads the view's scope and its rate in allow_request.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return None
        self.rate = self.get_rate()
        self.num_requests, self.duration = cast("tuple[int, int]", self.parse_rate(self.rate))
        return super().window(request, view)

    def allow_request(self, request: Request, view: "APIView") -> bool:
        return RedisRateThrottle.allow_request(self, request, view)


class ScopedWriteThrottle(ScopedRateThrottle):
    """ScopedRateThrottle for writes only: reads of the same view pass."""

    def window(self, request: Request, view: "APIView") -> Window | None:
        if request.method in SAFE_METHODS:
            return None
        return super().window(request, view)


def throttles_with(*extra: type[throttling.BaseThrottle]) -> list[type[throttling.BaseThrottle]]:
    """The default throttles plus `extra` (a view's throttle_classes replaces the defaults)."""
    defaults = cast("list[type[throttling.BaseThrottle]]", api_settings.DEFAULT_THROTTLE_CLASSES)
    return [*defaults, *extra]
