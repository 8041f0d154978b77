import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from kernel.redis import key, sync_client
from users.models import User

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_hasher(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _throttle_reset() -> None:
    """Throttle counters live in Redis, outside the test transaction."""
    client = sync_client()
    for name in client.scan_iter(match=key("*throttle_*")):
        client.delete(name)


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def api() -> APIClient:
    return APIClient()
