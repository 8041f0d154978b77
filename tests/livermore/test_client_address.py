"""The client address through the real web server process: X-Forwarded-For is believed only from
TRUSTED_PROXIES, and the lockout, the throttles and the per-address login cap all use the result."""

from pathlib import Path

import httpx
import pytest

from tests.support.stack import Stack, run_stack
from users.models import User

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def login(stack: Stack, username: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = httpx.post(
        f"{stack.url}/api/v1/auth/token",
        json={"username": username, "password": password},
        headers=headers,
        timeout=30,
    )
    return response.status_code


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def test_a_forged_forwarded_for_escapes_neither_the_lockout_nor_the_throttle(
    tmp_path: Path, alice: User
) -> None:
    with run_stack(
        tmp_path, "web", WEB_PROCESSES="1", THROTTLE_AUTH="8/min", AXES_FAILURE_LIMIT="3"
    ) as stack:
        stack.wait_http("/healthz")
        statuses = [login(stack, "alice", "wrong", forwarded_for=f"203.0.113.{i}") for i in range(3)]
        assert statuses == [401, 401, 429]
        assert login(stack, "alice", PASSWORD, forwarded_for="198.51.100.9") == 429
        # The auth throttle counts the peer too: four more requests, whatever they claim, and it is full.
        statuses = [login(stack, "bob", "wrong", forwarded_for=f"192.0.2.{i}") for i in range(5)]
        assert statuses[-1] == 429
        stack.stop()
        assert "Traceback" not in stack.output()


def test_behind_a_trusted_proxy_the_forwarded_client_is_locked_out_and_capped_on_its_own(
    tmp_path: Path, alice: User
) -> None:
    with run_stack(
        tmp_path,
        "web",
        WEB_PROCESSES="1",
        TRUSTED_PROXIES="127.0.0.0/8",
        AXES_FAILURE_LIMIT="3",
        LOGIN_FAILURES_PER_ADDRESS="4",
        THROTTLE_AUTH="100/min",
    ) as stack:
        stack.wait_http("/healthz")
        assert [login(stack, "alice", "wrong", forwarded_for="203.0.113.7") for _ in range(3)] == [
            401,
            401,
            429,
        ]
        # A client prepending an address of its choice is still the address the proxy saw.
        assert login(stack, "alice", PASSWORD, forwarded_for="198.51.100.1, 203.0.113.7") == 429
        assert login(stack, "alice", PASSWORD, forwarded_for="203.0.113.8") == 200

        # Password spraying: failures from one address across usernames reach the per-address cap.
        sprayer = "203.0.113.50"
        assert [login(stack, f"user{i}", "Winter2026!", forwarded_for=sprayer) for i in range(4)] == [401] * 4
        assert login(stack, "alice", PASSWORD, forwarded_for=sprayer) == 429
        assert login(stack, "alice", PASSWORD, forwarded_for="203.0.113.51") == 200
        stack.stop()
        assert "Traceback" not in stack.output()
