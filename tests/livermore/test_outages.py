"""Outages answer in the API's own language: a Redis that refuses connections or a database session
that was killed gives 503 with the JSON error shape and Retry-After; reads that do not need Redis go
on, the throttle failing open."""

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import close_old_connections, connection
from django.test import Client
from rest_framework.test import APIClient

from kernel import throttling
from kernel.db import database_conninfo
from kernel.redis import sync_client
from tests.support.instruments import make_instrument
from tests.support.stack import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_down(settings: Any) -> Iterator[None]:
    """Redis refuses connections (nothing listens on its port)."""
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    sync_client.cache_clear()
    throttling._script.cache_clear()
    yield
    sync_client.cache_clear()  # the settings fixture restores REDIS_URL after this
    throttling._script.cache_clear()


@pytest.fixture
def api(alice: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


def kill_django_database_session() -> None:
    """The database ends this process's session, as a PostgreSQL restart does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(database_conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def assert_unavailable(response: Any, service: str) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "unavailable" and service in error["message"] and error["fields"] == {}


def test_a_read_that_needs_no_redis_is_served_while_redis_is_down(api: APIClient, redis_down: None) -> None:
    response = api.get("/api/v1/me")  # throttled by the user rate: the throttle fails open
    assert response.status_code == 200, response.content
    assert response.json()["username"] == "alice"


def test_a_read_of_the_ticker_cache_while_redis_is_down_is_503_json(api: APIClient, redis_down: None) -> None:
    make_instrument("EURUSD")
    assert_unavailable(api.get("/api/v1/quotes"), "redis")


def test_an_api_request_on_a_killed_database_session_is_503_json_and_the_next_one_is_served(
    api: APIClient,
) -> None:
    kill_django_database_session()
    assert_unavailable(api.get("/api/v1/accounts"), "database")
    close_old_connections()  # what the end of a request does in a web process (the test client does not)
    assert api.get("/api/v1/accounts").status_code == 200  # a new session


def test_an_admin_page_on_a_killed_database_session_is_503_json_not_an_html_page(
    admin_client: Client,
) -> None:
    kill_django_database_session()
    assert_unavailable(admin_client.get("/admin/"), "database")
    close_old_connections()
