"""System events: what an operator is told about (a venue down, a FIX session dropped, a stop-out).

Any app raises one with `system_event_emit`; the handlers are dotted paths in
settings.SYSTEM_EVENT_LISTENERS (the alerts app's outbox), so a lower app never imports a higher one.
Emitting never raises and never waits on a database: a listener hands the event on (a Celery task)."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TypedDict

from django.conf import settings
from django.db import models
from django.utils.module_loading import import_string

from kernel import metrics

log = logging.getLogger(__name__)


class SystemEventKind(models.TextChoices):
    VENUE_DOWN = "venue.down", "Venue down"
    VENUE_UP = "venue.up", "Venue up"
    VENUE_FAILOVER = "venue.failover", "Venue failover"
    FIX_LOGON = "fix.logon", "FIX logon"
    FIX_LOGOUT = "fix.logout", "FIX logout"
    FIX_LOGON_REFUSED = "fix.logon_refused", "FIX logon refused"
    FIX_SEQUENCE_RESET = "fix.sequence_reset", "FIX sequence reset"
    MARGIN_CALL = "account.margin_call", "Margin call"
    STOP_OUT = "account.stop_out", "Stop-out"
    TRADING_STATE = "trading.state", "Kill switch change"
    PROCESS_START = "process.start", "Process start"
    PROCESS_STOP = "process.stop", "Process stop"
    TASK_FAILURE = "task.failure", "Task failure"
    DEAD_LETTERS = "outbox.dead_letters", "Dead letters"


class SystemEvent(TypedDict):
    kind: str
    subject: str  # what it is about: a venue code, a symbol, a session name, an account number
    text: str
    at: str  # ISO 8601, UTC


SystemEventListener = Callable[[SystemEvent], None]


@cache
def _listeners(paths: tuple[str, ...]) -> tuple[SystemEventListener, ...]:
    return tuple(import_string(path) for path in paths)


def system_event_emit(kind: SystemEventKind, *, subject: str, text: str, at: datetime | None = None) -> None:
    """Hands the event to every listener; a failing listener is logged and the caller goes on."""
    event = SystemEvent(
        kind=kind.value, subject=subject[:100], text=text[:500], at=(at or datetime.now(UTC)).isoformat()
    )
    metrics.SYSTEM_EVENTS.labels(kind=kind.value).inc()
    for listener in _listeners(tuple(settings.SYSTEM_EVENT_LISTENERS)):
        try:
            listener(event)
        except Exception:
            log.exception("system event %s subject=%s: listener failed", kind.value, subject)
