"""Log formatting (JSON lines in production, readable lines in development), the filter that keeps
secrets out of every line, and the slow-request log. Structured fields go in `extra`:
`log.info("filled", extra={"venue": v, "symbol": s, "account": a, "order": o})`."""

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

STRUCTURED_FIELDS = ("venue", "symbol", "account", "order", "session", "timeframe", "duration_ms", "path")

REDACTED = "[redacted]"
# What a secret looks like wherever it ends up in a line: a Discord webhook's token, an API key or
# bearer token in a header, a JWT, a PEM private key, a password in a URL, a key=value pair or a FIX
# message (tag 554 Password, 925 NewPassword).
_SECRETS = [
    (re.compile(r"(/api/webhooks/\d+/)[\w-]+"), r"\1" + REDACTED),
    (re.compile(r"((?:Api-Key|Bearer|Token)\s+)[\w.~+/=-]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"), REDACTED),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
        REDACTED,
    ),
    (re.compile(r"(\w+://[^:/\s@]+:)[^@\s]+(@)"), r"\1" + REDACTED + r"\2"),
    (
        re.compile(
            r"((?:password|passwd|secret|token|api_key|apikey|private_key)[\"']?\s*[=:]\s*[\"']?)[^\s\"',}&]+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(\b(?:554|925)=)[^\x01|\s]+"), r"\1" + REDACTED),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class SecretFilter(logging.Filter):
    """Renders each record's message and traceback with secrets redacted, before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for name in STRUCTURED_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: getattr(record, name) for name in STRUCTURED_FIELDS if getattr(record, name, None) is not None
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for production log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info or record.exc_text:
            payload["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(payload, default=str)


_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}


class ReadableFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`, the level coloured when stderr is a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.colour = sys.stderr.isatty()

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if fields:
            head, sep, rest = line.partition("\n")
            line = f"{head} {fields}{sep}{rest}"
        if self.colour:
            colour = _COLOURS.get(record.levelname, "")
            line = line.replace(record.levelname, f"{colour}{record.levelname}\x1b[0m", 1)
        return line


slow_log = logging.getLogger("livermore.slow")


class SlowRequestMiddleware:
    """Logs an HTTP request that took longer than LOG_SLOW_MS, with its path and duration."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.threshold_ms = settings.LOG_SLOW_MS
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        began = time.perf_counter()
        response = self.get_response(request)
        self._done(request, response, began)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        began = time.perf_counter()
        response: HttpResponse = await self.get_response(request)
        self._done(request, response, began)
        return response

    def _done(self, request: HttpRequest, response: HttpResponse, began: float) -> None:
        elapsed_ms = (time.perf_counter() - began) * 1000
        if elapsed_ms >= self.threshold_ms:
            slow_log.warning(
                "slow request %s %s -> %s",
                request.method,
                request.path,
                response.status_code,
                extra={"path": request.path, "duration_ms": round(elapsed_ms, 1)},
            )
