from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand
from psycopg import sql

from kernel.db import database_conninfo


class Command(BaseCommand):
    help = "Create the configured PostgreSQL database if it does not exist (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        db = settings.DATABASES["default"]
        conninfo = database_conninfo(dbname="postgres", connect_timeout=10)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone()
            if exists:
                self.stdout.write(f"Database {db['NAME']} exists.")
                return
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
            self.stdout.write(f"Database {db['NAME']} created.")
