"""Real threads against PostgreSQL: the account row lock and conditional updates keep the ledger right."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D

import pytest
from django.db import connection

from brokerage import services
from brokerage.models import Deal, LedgerTransaction, Order, Position, TransactionKind
from brokerage.pricing import Tick
from kernel.errors import ServiceError
from tests.support.trading import open_account

from .conftest import ledger_problems

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(fn):
    """Run fn in a worker thread with its own database connection, closed afterwards."""

    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return run


def test_a_hundred_concurrent_orders_keep_every_balance_equal_to_its_postings(
    alice, group, instruments, market
):
    from .conftest import set_commission

    set_commission(group, instruments["EURUSD"], "3")
    accounts = [open_account(alice, group, balance="2000") for _ in range(5)]
    market.set("EURUSD", "1.1000", "1.1002")
    start = threading.Barrier(10)

    @in_thread
    def submit(i: int) -> str:
        if i < 10:
            start.wait()
        try:
            services.order_submit(
                account=accounts[i % 5], symbol="EURUSD", side="buy" if i % 2 else "sell", volume=D("0.1")
            )
        except ServiceError as exc:
            return exc.code
        return "filled"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(submit, range(100)))
    # Each 0.1 lot holds ~110.01 USD of margin and costs 2 USD of spread and 0.30 of commission in
    # equity: 2000 USD carries 17 of them, whatever order the threads run in; the rest are refused.
    assert outcomes.count("filled") == Order.objects.count() == 85
    assert set(outcomes) == {"filled", "insufficient_margin"}
    assert LedgerTransaction.objects.filter(kind=TransactionKind.COMMISSION).count() == 85
    assert ledger_problems() == []
    for account in accounts:
        account.refresh_from_db()
        assert account.balance == D("2000") - D("0.30") * 17


def test_a_deposit_racing_a_close_keeps_the_ledger_consistent(alice, group, market):
    account = open_account(alice, group, balance="5000")
    market.set("EURUSD", "1.1000", "1.1002")
    for _ in range(20):
        services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    market.set("EURUSD", "1.1050", "1.1052")
    positions = list(Position.objects.filter(account=account))
    barrier = threading.Barrier(2)

    @in_thread
    def close_all() -> None:
        barrier.wait()
        for position in positions:
            services.position_close(position=position)

    @in_thread
    def deposit_many() -> None:
        barrier.wait()
        for _ in range(20):
            services.account_deposit(account=account, amount=D("10"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(close_all), pool.submit(deposit_many)]:
            future.result()
    account.refresh_from_db()
    assert account.balance == D("5000") + 20 * D("48") + 20 * D("10")
    assert ledger_problems() == []


def test_concurrent_duplicate_trigger_attempts_execute_once(alice, group, market):
    account = open_account(alice, group)
    market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1), sl=D("1.0950"))
    pending = services.order_submit(
        account=account, symbol="EURUSD", side="buy", volume=D(1), type="limit", price=D("1.0950")
    )
    position = Position.objects.get(deals__order=order)
    barrier = threading.Barrier(8)
    tick = Tick(D("1.0950"), D("1.0950"))

    @in_thread
    def attempt(i: int) -> object:
        barrier.wait()
        if i % 2:
            return services.position_trigger(position_id=position.pk, kind="sl", tick=tick)
        return services.order_trigger(order_id=pending.pk, tick=tick)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert sum(1 for r in results[1::2] if r is not None) == 1
    assert sum(1 for r in results[0::2] if r is not None) == 1
    assert Deal.objects.filter(position=position, entry="out").count() == 1
    assert Deal.objects.filter(order=pending).count() == 1
    assert LedgerTransaction.objects.filter(kind=TransactionKind.REALIZED_PNL).count() == 1
    account.refresh_from_db()
    assert account.balance == D("4480")
    assert ledger_problems() == []
