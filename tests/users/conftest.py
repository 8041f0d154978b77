import pytest
from rest_framework.test import APIClient

from kernel.redis import key, sync_client


@pytest.fixture(autouse=True)
def _throttle_reset() -> None:
    """Throttle counters live in Redis, outside the test transaction."""
    client = sync_client()
    for name in client.scan_iter(match=key("*throttle_*")):
        client.delete(name)


@pytest.fixture
def api() -> APIClient:
    return APIClient()
