from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed

from kernel.redis import sync_client
from kernel.sysevents import SystemEvent
from tests.support import sysevents

PASSWORD = "correct horse battery staple"  # test-only credential for the named test users


def _channel_layer_follows_redis_prefix(*, setting: str, value: Any, **kwargs: Any) -> None:
    """settings.py derives the channel layer's prefix from REDIS_PREFIX, and so do the child processes
    a test starts with its own prefix: this process follows when a test overrides it."""
    if setting == "REDIS_PREFIX":
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{value}:ch"
        channel_layers.backends.clear()


setting_changed.connect(_channel_layer_follows_redis_prefix)


@pytest.fixture(autouse=True)
def system_events(settings: Any) -> Iterator[list[SystemEvent]]:
    """System events go to a list, not to the broker; a test that wants the outbox sets the listener."""
    settings.SYSTEM_EVENT_LISTENERS = ["tests.support.sysevents.record"]
    sysevents.RECEIVED.clear()
    yield sysevents.RECEIVED
    sysevents.RECEIVED.clear()


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Each test starts with no keys under the test prefix."""
    yield
    redis = sync_client()
    keys = list(redis.scan_iter(f"{settings.REDIS_PREFIX}:*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture
def alice(db: Any) -> Any:
    """A client."""
    return get_user_model().objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def bob(db: Any) -> Any:
    """Another client."""
    return get_user_model().objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def operator(db: Any) -> Any:
    """Desk staff with the admin."""
    return get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
