"""Django's PostgreSQL backend, whose connection pool checks a connection without a round trip.

With CONN_HEALTH_CHECKS, Django gives psycopg's pool `ConnectionPool.check_connection`: an empty query
sent before each connection is handed out, so a round trip to PostgreSQL at the start of every web
request (measured: 34 us of the web process's CPU per request, and as long again waiting, on top of
the server's own work). A pooled connection goes bad while it waits in the pool when PostgreSQL ends
its session (a restart, pg_terminate_backend, idle_session_timeout): the server then sends its FATAL
message and closes the socket, so the socket has something to read, or libpq already marked the
connection bad. `check_connection` here looks for that first (one poll of the socket, no round trip)
and only then sends the empty query, which fails, and the pool opens a new connection instead.
A connection whose path to the server vanished silently would stall the empty query as long as
the request's own first query, so that check is not lost.
"""

import select
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg import Connection, pq
from psycopg_pool import ConnectionPool


def check_connection(conn: Connection[Any]) -> None:
    """Raise when the pooled connection `conn` is no longer usable (as ConnectionPool.check_connection
    does), sending a query only when the server said something or libpq marked the connection bad."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable or conn.pgconn.status != pq.ConnStatus.OK:
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """Django's pool (base.DatabaseWrapper.pool), built with `check_connection` as its check when
        CONN_HEALTH_CHECKS is on."""
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options or not self.settings_dict["CONN_HEALTH_CHECKS"]:
            return super().pool  # type: ignore[misc]  # django-stubs lacks Django 5.1's pool
        pools: dict[str, ConnectionPool[Any]] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            pool = ConnectionPool(
                kwargs={**self.get_connection_params(), "autocommit": True},
                open=False,  # opened by the first connection, as Django's is
                configure=self._configure_connection,  # type: ignore[attr-defined]
                check=check_connection,
                **({} if options is True else options),
            )
            pools.setdefault(self.alias, pool)  # the first thread's wins, as in Django
        return pools[self.alias]
