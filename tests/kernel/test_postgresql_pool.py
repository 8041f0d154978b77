"""The database pool's health check (kernel/postgresql): a pooled connection is handed out without a
round trip while its session lives, and one whose session PostgreSQL ended is replaced, not handed
out."""

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection

from kernel.db import database_conninfo
from kernel.postgresql.base import DatabaseWrapper

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pooled() -> Iterator[Any]:
    """A one-connection pool of the test database, built by the backend as the web process's is."""
    settings = {
        **connection.settings_dict,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {**connection.settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 1}},
    }
    wrapper = DatabaseWrapper(settings, alias="pool-check-test")
    pool = wrapper.pool
    assert pool is not None
    pool.open(wait=True)
    yield pool
    wrapper.close_pool()  # type: ignore[attr-defined]


def _activity(pid: int) -> tuple[Any, str] | None:
    """When the session `pid` last changed state and its last query, as PostgreSQL reports them."""
    with psycopg.connect(database_conninfo(), autocommit=True) as other:
        return other.execute(
            "SELECT state_change, query FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()


def test_a_live_pooled_connection_is_handed_out_without_a_query(pooled: Any) -> None:
    conn = pooled.getconn()
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    pooled.putconn(conn)
    before = _activity(pid)
    assert before is not None and before[1] == "SELECT 1"

    conn = pooled.getconn()
    assert conn.info.backend_pid == pid
    assert _activity(pid) == before  # Django's check would have sent an empty query: state_change moves
    pooled.putconn(conn)


def test_a_pooled_connection_whose_session_was_ended_is_replaced(pooled: Any) -> None:
    conn = pooled.getconn()
    pid = conn.info.backend_pid
    pooled.putconn(conn)
    with psycopg.connect(database_conninfo(), autocommit=True) as other:  # as a PostgreSQL restart does
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "PostgreSQL did not end the session"
            time.sleep(0.01)  # the session is gone once PostgreSQL no longer lists it

    conn = pooled.getconn()
    try:
        assert conn.info.backend_pid != pid
        assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pooled.putconn(conn)
