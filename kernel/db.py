"""Connection details of the Django database for code that opens its own psycopg connections."""

from django.db import connections
from psycopg.conninfo import make_conninfo


def database_conninfo(alias: str = "default", **overrides: str | int | None) -> str:
    """A libpq connection string for a Django database (the test database under pytest);
    `overrides` replace or add libpq parameters (dbname="postgres", connect_timeout=10)."""
    db = connections[alias].settings_dict
    params: dict[str, str | int | None] = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": str(db["PORT"]) if db.get("PORT") else None,
        **overrides,
    }
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})
