"""A PostgreSQL restart under 50 market orders a second through the API, on the real processes
(`web` and `market` under the supervisor) and a private PostgreSQL cluster that the test starts,
stops (fast shutdown: every session ended) and starts again. Each order carries an Idempotency-Key
and is retried with it until it is answered 201: every key makes exactly one order, the ledger
balances, and no process restarts."""

import itertools
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from brokerage.models import ClientGroup, MarginMode
from kernel.db import database_conninfo
from marketdata.demo import demo_seed
from tests.support.servers import PrivatePostgres, private_postgres
from tests.support.stack import run_stack
from tests.support.trading import open_account
from tests.support.users import make_client
from users.models import ApiKey

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RATE = 50  # orders per second
LOAD_S = 10.0
DOWN_AT_S = 3.0
DOWN_S = 1.0
RETRY_S = 0.2
DEADLINE_S = 30.0  # an order not answered 201 by then is lost


@dataclass
class Orders:
    """Orders sent at a steady rate, each retried with its Idempotency-Key until answered 201."""

    client: httpx.Client
    path: str
    done: dict[str, int] = field(default_factory=dict)  # key -> order id
    failed: list[object] = field(default_factory=list)  # every failed attempt's status or error
    answered_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def place(self, key: str, side: str) -> None:
        body = {"symbol": "EURUSD", "side": side, "volume": "0.01"}
        give_up = time.monotonic() + DEADLINE_S
        while time.monotonic() < give_up:
            outcome: object
            try:
                response = self.client.post(self.path, json=body, headers={"Idempotency-Key": key})
                outcome = response.status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            if outcome == 201:
                with self.lock:
                    self.done[key] = response.json()["id"]
                    self.answered_at.append(time.monotonic())
                return
            with self.lock:
                self.failed.append(outcome)
            time.sleep(RETRY_S)


def one(conn: psycopg.Connection[tuple[Any, ...]], sql: str, params: list[Any]) -> tuple[Any, ...]:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row


def copy_database(server: PrivatePostgres) -> str:
    """The test database (schema and the test's rows) copied into the private cluster."""
    subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "livermore"], check=True
    )
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "--no-acl", "-d", database_conninfo()], check=True, capture_output=True
    )
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.url("livermore")],
        input=dump.stdout,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return server.url("livermore")


def test_a_postgres_restart_under_50_orders_a_second_loses_and_doubles_no_order(tmp_path: Path) -> None:
    demo_seed()
    group = ClientGroup.objects.create(
        name="faults", currency="USD", leverage=100, margin_mode=MarginMode.NETTING
    )
    account = open_account(make_client("alice", password=None), group, "100000000")
    _, api_key = ApiKey.issue(user=account.owner, name="faults")
    with private_postgres() as server:
        url = copy_database(server)
        with run_stack(tmp_path, "web", "market", DATABASE_URL=url, THROTTLE_ORDERS="100000/min") as stack:
            stack.wait_http("/readyz", timeout=60)
            headers = {"Authorization": f"Api-Key {api_key}"}
            limits = httpx.Limits(max_connections=64)
            with (
                httpx.Client(base_url=stack.url, headers=headers, timeout=10, limits=limits) as client,
                ThreadPoolExecutor(max_workers=64) as pool,
            ):
                orders = Orders(client, f"/api/v1/accounts/{account.number}/orders")
                keys = [str(uuid.uuid4()) for _ in range(int(RATE * LOAD_S))]
                began = time.monotonic()
                restarted, down = False, 0.0
                for i, (key, side) in enumerate(zip(keys, itertools.cycle(["buy", "sell"]))):
                    time.sleep(max(began + i / RATE - time.monotonic(), 0))
                    pool.submit(orders.place, key, side)
                    if not restarted and time.monotonic() - began >= DOWN_AT_S:
                        restarted = True
                        threading.Thread(target=restart, args=(server,), daemon=True).start()
                        down = time.monotonic()
                pool.shutdown(wait=True)
            recovered_s = min((t for t in orders.answered_at if t > down + DOWN_S), default=float("inf")) - (
                down + DOWN_S
            )
            stack.stop()
            output = stack.output()
        with psycopg.connect(url) as conn:
            orders_stored = one(
                conn,
                "SELECT count(*), count(DISTINCT id) FROM brokerage_order WHERE account_id = %s",
                [account.pk],
            )
            keys_stored = one(
                conn,
                "SELECT count(*) FROM users_idempotencykey WHERE user_id = %s AND response_status = 201",
                [account.owner_id],
            )[0]
            unbalanced = one(
                conn,
                "SELECT count(*) FROM (SELECT transaction_id FROM brokerage_posting GROUP BY 1 "
                "HAVING sum(amount) <> 0) t",
                [],
            )[0]
            balance, posted = one(
                conn,
                "SELECT a.balance, (SELECT sum(p.amount) FROM brokerage_posting p "
                "JOIN brokerage_ledgeraccount l ON l.id = p.ledger_account_id "
                "WHERE l.trading_account_id = a.id) "
                "FROM brokerage_tradingaccount a WHERE a.id = %s",
                [account.pk],
            )
    print(
        f"postgres restart under {RATE} orders/s: orders answered again {recovered_s:.2f}s after it "
        f"was back; sent {len(keys)}, answered {len(orders.done)}, failed attempts {len(orders.failed)} "
        f"({sorted({str(f) for f in orders.failed})}); stored {orders_stored[0]}, keys {keys_stored}; "
        f"unbalanced transactions {unbalanced}"
    )
    assert len(orders.done) == len(keys)  # every order answered 201 in the end
    assert len(set(orders.done.values())) == len(keys)  # each key its own order
    assert orders_stored == (len(keys), len(keys))  # none doubled, none lost
    assert keys_stored == len(keys)
    assert unbalanced == 0
    assert Decimal(balance) == Decimal(posted)
    for name in ("web", "market"):
        assert output.count(f"{name}.1 started") == 1, output[-4000:]


def restart(server: PrivatePostgres) -> None:
    server.stop()
    time.sleep(DOWN_S)
    server.start()
