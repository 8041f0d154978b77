"""Dealing benchmarks.

order_service_orders_per_s: market orders through brokerage.services.order_submit, called directly
from 6 processes (so the GIL is not what is measured) of 4 client threads each, as a web process's
request threads call it (so its dealers commit waiting orders together, brokerage/services/dealer.py),
over 200 accounts (one account row lock each, as in production), priced from the in-memory quote
source the market process uses, against a throwaway PostgreSQL database (<name>_bench, dropped
afterwards) and a -bench Redis prefix, with DEBUG off as in production. Each process freezes its
start-up objects out of the GC first, as the web and worker processes do. The orders that shared a
commit are reported on stderr.

order_sql_orders_per_s: the database's own ceiling for that path. The statements a dealer's batch of
SQL_ORDERS_PER_COMMIT market orders on as many accounts runs (recorded from order_submit on the same
database: the accounts locked together, their exposures read together, each order's linked insert of
the order, position and deal) replayed by pgbench, with no Python at all: one batch of ascending
accounts per transaction (a dealer's group commit at its best), SQL_CLIENTS clients. The order
service cannot beat it, so it splits the gap between order_service_orders_per_s and its bar into the
database's part and the Python part.

trigger_scan_10k_ms: checking one quote against 10,000 pending triggers in the watcher's index.
"""

import multiprocessing
import os
import re
import sys
import tempfile
import threading
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit, emit_vs_pgbench, pgbench_tps, pgbench_tps_for_ratio

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
os.environ["REDIS_PREFIX"] = os.environ.get("REDIS_PREFIX", "livermore") + "-bench"
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("DEBUG", "false")  # as production serves orders: no query log on every statement

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

ACCOUNTS = 200
PROCESSES = 6
CLIENTS = 4  # threads per process
ORDERS = 3000
ORDERS_PER_S_BAR = 3000  # issue 16
FIRST_ACCOUNT_ID = 7_000_000  # no other value an order binds is a number like it (see order_sql_per_s)
SQL_ORDERS_PER_COMMIT = 5
SQL_CLIENTS = 4
SQL_SECONDS = 5
TRIGGERS = 10_000
SCANS = 20_000


def trigger_scan_ms() -> float:
    from brokerage.triggers import Trigger, TriggerIndex

    index = TriggerIndex()
    lock = threading.Lock()
    for i in range(TRIGGERS):
        offset = D(i) / 1_000_000
        long_side = i % 2 == 0
        index.add(
            Trigger.make(
                kind="sl" if i % 3 else "order",
                object_id=i,
                account_id=i % 500,
                symbol="EURUSD",
                group_id=1,
                instrument_id=1,
                side="buy" if long_side else "sell",
                rule="sl" if i % 3 else "limit",
                level=(D("1.0900") - offset) if long_side else (D("1.1100") + offset),
                markup=D(0),
            )
        )
    bids = [D("1.10000") + D(i % 50) / 100_000 for i in range(SCANS)]
    started = time.perf_counter()
    for bid in bids:
        with lock:
            fired = index.fire("EURUSD", bid, bid + D("0.00012"))
        assert not fired
    return (time.perf_counter() - started) * 1000 / SCANS


def _submit_share(worker: int, account_ids: list[int], barrier: Any) -> tuple[float, float, int, int, int]:
    """One process's share: its own accounts, a live in-memory quote, then order_submit in a loop."""
    from brokerage import services
    from brokerage.models import TradingAccount
    from brokerage.quotes import MemoryQuoteSource
    from brokerage.services.dealer import dealers
    from kernel.heap import freeze_startup_objects
    from marketdata.quotes import Quote, SelectedQuote

    quotes = MemoryQuoteSource()
    stop = threading.Event()

    def feed() -> None:  # keeps the quote fresh, as the market loop does
        while True:
            now = time.time_ns()
            quote = Quote("EURUSD", "sim", D("1.10000"), D("1.10012"), now, now)
            quotes.update(SelectedQuote(symbol="EURUSD", seq=1, quote=quote, tradable=True))
            if stop.wait(0.2):
                return

    threading.Thread(target=feed, daemon=True).start()
    accounts = list(TradingAccount.objects.filter(pk__in=account_ids))
    services.order_submit(  # warm up the connection and caches before the clock starts
        account=accounts[0], symbol="EURUSD", side="buy", volume=D("0.01"), quotes=quotes
    )
    freeze_startup_objects()  # as the processes that serve orders do (kernel.heap)
    mine = list(range(worker, ORDERS, PROCESSES))
    done = [0] * CLIENTS

    def client(c: int) -> None:
        try:
            for i in mine[c::CLIENTS]:
                services.order_submit(
                    account=accounts[i % len(accounts)],
                    symbol="EURUSD",
                    side="buy" if i % 2 else "sell",
                    volume=D("0.01"),
                    quotes=quotes,
                )
                done[c] += 1
        finally:
            connection.close()

    clients = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    barrier.wait()
    started = time.perf_counter()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    finished = time.perf_counter()
    stop.set()
    batches, batched = dealers.batched()
    dealers.close()
    connection.close()
    return started, finished, sum(done), batches, batched


def bench_accounts() -> list[int]:
    """ACCOUNTS accounts of one group, numbered from FIRST_ACCOUNT_ID on."""
    from brokerage.models import ClientGroup, TradingAccount
    from marketdata.demo import demo_seed
    from tests.support.trading import open_account
    from tests.support.users import make_client

    demo_seed()
    group = ClientGroup.objects.create(name="bench", currency="USD", leverage=100)
    owner = make_client("bench", password=None)
    with connection.cursor() as cursor:
        table = TradingAccount._meta.db_table
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, FIRST_ACCOUNT_ID]
        )
    account_ids = [open_account(owner, group, "1000000").pk for _ in range(ACCOUNTS)]
    assert account_ids == list(range(FIRST_ACCOUNT_ID, FIRST_ACCOUNT_ID + ACCOUNTS))
    return account_ids


def orders_per_s(account_ids: list[int]) -> float:
    connection.close()  # no connection may cross the fork
    context = multiprocessing.get_context("fork")
    barrier = context.Manager().Barrier(PROCESSES)
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(
            _submit_share, [(w, account_ids[w::PROCESSES], barrier) for w in range(PROCESSES)]
        )
    started = min(r[0] for r in results)
    finished = max(r[1] for r in results)
    filled = sum(r[2] for r in results)
    assert filled == ORDERS
    batches, batched = sum(r[3] for r in results), sum(r[4] for r in results)
    print(f"dealers: {batched} of {filled} orders committed in {batches} shared commits", file=sys.stderr)
    return filled / (finished - started)


def order_sql_per_s(account_ids: list[int]) -> float:
    """Record the statements of a dealer's batch of SQL_ORDERS_PER_COMMIT market orders on as many
    accounts (run on this thread's connection, not a dealer's, as a batch's first attempt runs them:
    the accounts locked together and their exposures read together, then each order's linked insert),
    render each with its values, put the accounts' ids back as pgbench variables (one account of its
    own slice of the accounts per order, so ascending, as a dealer locks them: no deadlock) and replay
    the batch as one transaction."""
    import psycopg

    from brokerage import services
    from brokerage.models import TradingAccount
    from brokerage.quotes import MemoryQuoteSource
    from brokerage.services.locks import locked_ahead
    from marketdata.quotes import Quote, SelectedQuote

    quotes = MemoryQuoteSource()
    now = time.time_ns()
    quote = Quote("EURUSD", "sim", D("1.10000"), D("1.10012"), now, now)
    quotes.update(SelectedQuote(symbol="EURUSD", seq=1, quote=quote, tradable=True))
    share = len(account_ids) // SQL_ORDERS_PER_COMMIT
    batch = [account_ids[(k + 1) * share - 1] for k in range(SQL_ORDERS_PER_COMMIT)]
    accounts = TradingAccount.objects.in_bulk(batch)
    statements: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):  # a dealer's first attempt has none
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record), transaction.atomic(), locked_ahead(batch):
        for account_id in batch:
            services.order_submit(
                account=accounts[account_id], symbol="EURUSD", side="buy", volume=D("0.01"), quotes=quotes
            )
    mogrify = psycopg.ClientCursor(connection.connection).mogrify
    rendered = [mogrify(sql, params) for sql, params in statements]
    together = re.compile(r"'\{" + ",".join(str(a) for a in batch) + r"\}'::int[48]\[\]")
    variables = ", ".join(f":a{k}" for k in range(SQL_ORDERS_PER_COMMIT))
    script = [together.sub(f"ARRAY[{variables}]::bigint[]", s) for s in rendered]
    for k, account_id in enumerate(batch):
        script = [re.sub(rf"\b{account_id}\b", f":a{k}", s) for s in script]
    assert sum(bool(together.search(s)) for s in rendered) == 2, "the batch's lock and exposures"
    other_id = re.compile(rf"\b{FIRST_ACCOUNT_ID // 1000}\d{{3}}\b")  # an account id not replaced
    assert not any(other_id.search(s) for s in script), "an account id is ambiguous"
    lines = [
        f"\\set a{k} random({account_ids[k * share]}, {account_ids[(k + 1) * share - 1]})"
        for k in range(SQL_ORDERS_PER_COMMIT)
    ]
    lines += ["BEGIN;", *(s + ";" for s in script), "COMMIT;"]
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
        file.write("\n".join(lines) + "\n")
        file.flush()
        clients = str(SQL_CLIENTS)
        tps = pgbench_tps(
            settings.DATABASES["default"]["NAME"],
            *("-M", "prepared", "-f", file.name, "-c", clients, "-j", clients, "-T", str(SQL_SECONDS)),
        )
    return tps * SQL_ORDERS_PER_COMMIT


def main() -> None:
    emit("trigger_scan_10k_ms", trigger_scan_ms(), "ms", "<= 1")
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = (
        settings.DATABASES["default"]["NAME"] + "_bench"
    )
    old = setup_databases(verbosity=0, interactive=False)
    try:
        account_ids = bench_accounts()
        rate = orders_per_s(account_ids)
        emit("order_service_orders_per_s", rate, "orders/s", f">= {ORDERS_PER_S_BAR}")
        ceiling = order_sql_per_s(account_ids)
        emit("order_sql_orders_per_s", ceiling, "orders/s", f">= {ORDERS_PER_S_BAR}")
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
    emit_vs_pgbench("order_service_vs_pgbench", rate, ORDERS_PER_S_BAR, pgbench_tps_for_ratio())


if __name__ == "__main__":
    main()
