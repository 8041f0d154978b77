import os
import socket
from typing import Any

from celery import Celery
from celery.signals import task_failure, worker_init, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")

app = Celery("livermore")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _freeze_startup_objects(**kwargs: Any) -> None:
    """In the worker's main process, before it forks its pool: the children inherit the frozen
    objects without a collection of their own touching (and so copying) every inherited page."""
    from kernel.heap import freeze_startup_objects

    freeze_startup_objects()


# The task that records system events does not report its own failures (no loop of failures).
SILENT_TASKS = frozenset({"alerts.tasks.system_event_record"})


@worker_ready.connect
def _worker_started(**kwargs: Any) -> None:
    from kernel.sysevents import SystemEventKind, system_event_emit

    system_event_emit(SystemEventKind.PROCESS_START, subject=f"worker@{socket.gethostname()}", text="started")


@worker_shutdown.connect
def _worker_stopped(**kwargs: Any) -> None:
    from kernel.sysevents import SystemEventKind, system_event_emit

    system_event_emit(SystemEventKind.PROCESS_STOP, subject=f"worker@{socket.gethostname()}", text="stopped")


@task_failure.connect
def _task_failed(sender: Any = None, exception: BaseException | None = None, **kwargs: Any) -> None:
    name = getattr(sender, "name", "?")
    if name in SILENT_TASKS:
        return
    from kernel.sysevents import SystemEventKind, system_event_emit

    # The exception's type only: its message may carry what a log line must not (a URL, a token).
    system_event_emit(SystemEventKind.TASK_FAILURE, subject=name, text=type(exception).__name__)
