"""The venue REST client base: timeouts, bounded retries with backoff that honour 429 and
Retry-After, and one log line per call with the venue and the outcome (never a credential).

Synchronous (httpx.Client): its callers are Celery tasks and admin actions that write through the
Django ORM, so an async client would only add an event loop per call and gain no concurrency.
"""

import email.utils
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import httpx

from .base import Backoff

log = logging.getLogger(__name__)

Params = Mapping[str, str | int | Sequence[str]]


class VenueHttpError(Exception):
    """A venue answered with an error (or not at all) after the retries allowed."""

    def __init__(self, venue: str, status: int | None, message: str) -> None:
        super().__init__(f"{venue}: {f'HTTP {status}' if status else 'no response'}: {message}")
        self.venue, self.status, self.message = venue, status, message


def retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(response: httpx.Response) -> str:
    """The venue's error text: Coinbase `message`/`error`, OANDA `errorMessage`, Binance `msg`, else
    the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for name in ("message", "errorMessage", "msg", "error"):
            if isinstance(body.get(name), str) and body[name]:
                return body[name][:200]
    return response.text[:200]


class RestClient:
    """One venue's REST API. Subclasses add their authentication in `auth_headers`."""

    def __init__(
        self,
        *,
        venue: str,
        base_url: str,
        timeout_s: float = 10.0,
        max_retries: int = 4,
        max_wait_s: float = 60.0,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.venue = venue
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=max_wait_s)
        self.sleep = sleep
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.requests = 0  # answered requests (pages), for a backfill's progress
        self.waits = 0  # retries waited out (429 and Retry-After included), for the same

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def auth_headers(self, request: httpx.Request) -> dict[str, str]:
        return {}

    def get(self, path: str, params: Params | None = None) -> Any:
        """GET a JSON document, retrying throttling (429), 5xx and transport errors a bounded number
        of times; GETs are idempotent so a retry never duplicates anything."""
        self.backoff.reset()
        attempt = 0
        while True:
            attempt += 1
            request = self.http.build_request("GET", path, params=params)
            # Built per attempt: a Coinbase JWT lives 120 s and must not be reused after a long wait.
            request.headers.update(self.auth_headers(request))
            started = time.monotonic()
            try:
                response = self.http.send(request)
            except httpx.TransportError as exc:
                outcome, status, wait = type(exc).__name__, None, None
            else:
                status = response.status_code
                if status < 400:
                    self.requests += 1
                    log.info(
                        "venue=%s GET %s -> %d in %.0f ms (attempt %d)",
                        self.venue,
                        request.url.path,
                        status,
                        (time.monotonic() - started) * 1000,
                        attempt,
                    )
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise VenueHttpError(self.venue, status, "response is not JSON") from exc
                if status != 429 and status < 500:
                    message = error_message(response)
                    log.warning("venue=%s GET %s -> %d (%s)", self.venue, request.url.path, status, message)
                    raise VenueHttpError(self.venue, status, message)
                outcome, wait = f"HTTP {status}", retry_after_s(response)
            if attempt > self.max_retries:
                log.warning(
                    "venue=%s GET %s -> %s, giving up after %d attempts",
                    self.venue,
                    request.url.path,
                    outcome,
                    attempt,
                )
                raise VenueHttpError(self.venue, status, f"{outcome} after {attempt} attempts")
            delay = min(self.max_wait_s, wait if wait is not None else self.backoff.next_delay())
            log.warning(
                "venue=%s GET %s -> %s, retry %d/%d in %.2f s",
                self.venue,
                request.url.path,
                outcome,
                attempt,
                self.max_retries,
                delay,
            )
            self.waits += 1
            self.sleep(delay)
