from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.core.signals import setting_changed
from pytest_django import Settings

from kernel.redis import sync_client
from kernel.sysevents import SystemEvent
from tests.support import sysevents
from tests.support.users import StaffFactory, make_client, make_operator, make_staff
from users.models import User


def _channel_layer_follows_redis_prefix(*, setting: str, value: Any, **kwargs: Any) -> None:
    """settings.py derives the channel layer's prefix from REDIS_PREFIX, and so do the child processes
    a test starts with its own prefix: this process follows when a test overrides it."""
    if setting == "REDIS_PREFIX":
        layers: dict[str, Any] = settings.CHANNEL_LAYERS
        layers["default"]["CONFIG"]["prefix"] = f"{value}:ch"
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


@pytest.fixture(autouse=True)
def _dealers_closed() -> Iterator[None]:
    """Order dealer threads (brokerage.services.dealer) started by a test end with it, connections
    closed, before its database is flushed or dropped."""
    yield
    from brokerage.services.dealer import dealers

    dealers.close()


@pytest.fixture(autouse=True)
def _fast_hasher(request: pytest.FixtureRequest, settings: Settings) -> None:
    """Password hashing at test speed, except in tests that start processes of their own (marked
    slow or browser): those check passwords with the production hashers."""
    if not any(request.node.get_closest_marker(m) for m in ("slow", "browser")):
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(db: None) -> User:
    """A client."""
    return make_client("alice")


@pytest.fixture
def bob(db: None) -> User:
    """Another client."""
    return make_client("bob")


@pytest.fixture
def operator(db: None) -> User:
    """Desk staff with every permission."""
    return make_operator()


@pytest.fixture
def staff_user(db: None) -> StaffFactory:
    """Makes desk staff holding only the named permissions: `staff_user("brokerage.view_order")`."""
    made = 0

    def make(*perms: str) -> User:
        nonlocal made
        made += 1
        return make_staff(f"staff{made}", *perms)

    return make
