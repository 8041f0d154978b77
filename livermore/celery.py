import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

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
