"""The dealer's group commit with real threads against PostgreSQL: batches keep the ledger right,
each order is written once, one account's orders keep their order, and a refused order in a batch
(or one the ledger's rules refuse at commit) leaves its neighbours filled."""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from brokerage import selectors, services
from brokerage.models import (
    Deal,
    LedgerTransaction,
    Order,
    Position,
    Posting,
    TradingAccount,
    TransactionKind,
)
from brokerage.services import locks
from brokerage.services.dealer import dealers
from kernel import versions
from kernel.errors import ServiceError
from kernel.redis import sync_client
from tests.support.stack import free_port

from .conftest import ledger_problems, open_account, set_commission

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 100
ORDERS_EACH = 4


def test_a_hundred_concurrent_clients_through_the_dealer_keep_the_ledger(alice, group, instruments, market):
    set_commission(group, instruments["EURUSD"], "3")
    accounts = [open_account(alice, group, balance="2000") for _ in range(20)]
    market.set("EURUSD", "1.1000", "1.1002")
    batches_before, batched_before = dealers.batched()
    start = threading.Barrier(CLIENTS)

    def client(i: int) -> list[str]:
        try:
            start.wait()
            outcomes = []
            for n in range(ORDERS_EACH):
                try:
                    order = services.order_submit(
                        account=accounts[i % 20],
                        symbol="EURUSD",
                        side="buy" if (i + n) % 2 else "sell",
                        volume=D("0.1"),
                        client_order_id=f"c{i}-{n}",
                    )
                except ServiceError as exc:
                    outcomes.append(exc.code)
                else:
                    assert order.status == "filled" and order.pk is not None
                    outcomes.append("filled")
            return outcomes
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        outcomes = [o for each in pool.map(client, range(CLIENTS)) for o in each]

    # 20 orders per account of which 17 fit its margin (as in test_concurrency), whatever the order.
    assert outcomes.count("filled") == 20 * 17
    assert set(outcomes) == {"filled", "insufficient_margin"}
    batches, batched = dealers.batched()
    assert batches > batches_before and batched - batched_before >= 2 * (batches - batches_before)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM brokerage_order),
                   (SELECT count(DISTINCT (account_id, client_order_id)) FROM brokerage_order),
                   (SELECT count(*) FROM brokerage_deal),
                   (SELECT count(*) FROM brokerage_position WHERE status = 'open'),
                   (SELECT count(*) FROM brokerage_ledgertransaction WHERE kind = 'commission'),
                   (SELECT count(*) FROM brokerage_order o WHERE NOT EXISTS (
                        SELECT 1 FROM brokerage_deal d WHERE d.order_id = o.id)),
                   (SELECT count(*) FROM brokerage_tradingaccount a WHERE a.id = ANY(%s)
                       AND a.balance <> 2000 - 0.30 * 17)
            """,
            [[a.pk for a in accounts]],
        )
        assert cursor.fetchone() == (340, 340, 340, 340, 340, 0, 0)
    assert ledger_problems() == []


def test_one_accounts_orders_keep_their_order_and_a_refused_one_leaves_its_neighbours(alice, group, market):
    account = open_account(alice, group, balance="5000")
    other = open_account(alice, group, balance="5000")
    market.set("EURUSD", "1.1000", "1.1002")
    results: dict[str, object] = {}

    def submit(key: str, on: TradingAccount, volume: D, client_order_id: str) -> None:
        try:
            results[key] = services.order_submit(
                account=on, symbol="EURUSD", side="buy", volume=volume, client_order_id=client_order_id
            )
        except ServiceError as exc:
            results[key] = exc.code
        finally:
            connection.close()

    threads = []
    batches_before, _ = dealers.batched()
    with transaction.atomic():
        # The account is locked here: the first order waits in its dealer while the rest queue up
        # behind it, and the dealer then takes them as one batch.
        services.account_deposit(account=account, amount=D("1"))
        services.account_deposit(account=other, amount=D("1"))
        for key, on, volume, client_order_id in [
            ("first", account, D("0.1"), "a0"),
            ("a1", account, D("0.1"), "a1"),
            ("b1", other, D("0.1"), "b1"),
            ("refused", account, D("50"), "big"),
            ("a2", account, D("0.2"), "a2"),
            ("b2", other, D("0.2"), "b2"),
        ]:
            thread = threading.Thread(target=submit, args=(key, on, volume, client_order_id))
            thread.start()
            threads.append(thread)
            time.sleep(0.2)  # each queued before the next
    for thread in threads:
        thread.join(timeout=30)
    assert results["refused"] == "insufficient_margin"
    assert all(isinstance(results[k], Order) for k in ("first", "a1", "b1", "a2", "b2"))
    assert dealers.batched()[0] > batches_before
    ids = dict(Order.objects.values_list("client_order_id", "id"))
    assert "big" not in ids
    assert ids["a0"] < ids["a1"] < ids["a2"] and ids["b1"] < ids["b2"]
    assert Deal.objects.count() == Position.objects.count() == 5
    assert LedgerTransaction.objects.filter(kind=TransactionKind.DEPOSIT).count() == 4
    assert ledger_problems() == []


def test_a_batch_the_ledger_rules_refuse_at_commit_runs_again_and_fails_only_the_unbalanced_one(alice, group):
    account = open_account(alice, group, balance="100")
    outcomes: dict[str, object] = {}

    def deposit(savepoint: bool) -> Order:
        with transaction.atomic(savepoint=savepoint):
            services.account_deposit(account=account, amount=D("1"))
        return Order()

    def unbalanced(savepoint: bool) -> Order:
        with transaction.atomic(savepoint=savepoint):
            txn = LedgerTransaction.objects.create(kind=TransactionKind.DEPOSIT, currency="USD")
            Posting.objects.create(transaction=txn, ledger_account=account.ledger_account, amount=D("5"))
        return Order()

    def submit(key: str, run: Callable[[bool], Order]) -> None:
        try:
            dealers.submit(account.pk, run)  # one dealer: a batch of the queued three
            outcomes[key] = "done"
        except IntegrityError:
            outcomes[key] = "refused"
        finally:
            connection.close()

    threads = []
    batches_before, _ = dealers.batched()
    with transaction.atomic():
        # The account is locked here: the first deposit waits in the dealer while the rest queue.
        TradingAccount.objects.select_for_update().get(pk=account.pk)
        for key, run in [("first", deposit), ("before", deposit), ("bad", unbalanced), ("after", deposit)]:
            thread = threading.Thread(target=submit, args=(key, run))
            thread.start()
            threads.append(thread)
            time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {"first": "done", "before": "done", "bad": "refused", "after": "done"}
    assert dealers.batched()[0] > batches_before
    account.refresh_from_db()
    assert account.balance == D("103")
    assert ledger_problems() == []


def test_a_batch_locks_its_accounts_and_reads_their_exposures_once_and_an_account_s_next_order_sees_its_first(
    alice, group, market, monkeypatch
):
    """A batch's accounts are locked in one statement and their exposures read in one more; an
    account's first order takes both from there, its next order in the batch (after the first
    wrote) locks and reads again, so its margin check counts the position the first one opened."""
    market.set("EURUSD", "1.1000", "1.1002")
    count = len(dealers.dealers) or settings.DEALING_DEALERS
    accounts: list[TradingAccount] = []
    while len(accounts) < 4:  # all of one dealer (accounts go to dealers by id)
        account = open_account(alice, group, balance="2000")
        if account.pk % count == 0:
            accounts.append(account)
    blocker, a, b, c = accounts
    lock_sql, statements = locks._lock_sql, []
    monkeypatch.setattr(
        locks,
        "_lock_sql",
        lambda trading, many=False: statements.append(("lock", many)) or lock_sql(trading, many),
    )
    open_exposures = selectors.open_exposures
    monkeypatch.setattr(
        selectors,
        "open_exposures",
        lambda *, account: statements.append(("exposures", account.pk)) or open_exposures(account=account),
    )
    results: dict[str, object] = {}

    def submit(key: str, on: TradingAccount) -> None:
        try:  # 1 lot: 1,100.20 of margin and 20 of spread; two do not fit 2,000
            results[key] = services.order_submit(account=on, symbol="EURUSD", side="buy", volume=D("1"))
        except ServiceError as exc:
            results[key] = exc.code
        finally:
            connection.close()

    threads = []
    with transaction.atomic():
        # The blocker's order waits for this lock in the dealer while the others queue: one batch.
        TradingAccount.objects.select_for_update().get(pk=blocker.pk)
        for key, on in [("blocker", blocker), ("a1", a), ("b", b), ("a2", a), ("c", c)]:
            thread = threading.Thread(target=submit, args=(key, on))
            thread.start()
            threads.append(thread)
            time.sleep(0.2)
        statements.clear()  # the blocker's own lock and exposures
    for thread in threads:
        thread.join(timeout=30)
    assert {k: getattr(v, "status", v) for k, v in results.items()} == {
        "blocker": "filled",
        "a1": "filled",
        "b": "filled",
        "a2": "insufficient_margin",
        "c": "filled",
    }
    assert statements == [
        ("exposures", blocker.pk),  # its order ran alone, after the lock it waited for
        ("lock", True),  # the batch: a, b and c together
        ("lock", False),  # a's second order, after its first one wrote
        ("exposures", a.pk),
        ("lock", True),  # it was refused: the others again, each in a savepoint, locked together again
    ]
    assert Position.objects.filter(account__in=[a, b, c]).count() == 3
    assert ledger_problems() == []


Ran = list[tuple[str, threading.Thread]]  # what ran: its name and thread


def _second_behind_a_caller_s_own() -> tuple[Ran, threading.Event, list[threading.Thread]]:
    """Two orders of one idle dealer: the first dealt with by its caller until `release` is set, the
    second submitted meanwhile. Returns what ran (name, thread), `release` and the two callers."""
    ran: Ran = []
    release = threading.Event()

    def first(savepoint: bool) -> Order:
        ran.append(("first", threading.current_thread()))
        release.wait(10)
        return Order()

    def second(savepoint: bool) -> Order:
        ran.append(("second", threading.current_thread()))
        return Order()

    callers = [threading.Thread(target=dealers.submit, args=(7, run)) for run in (first, second)]
    callers[0].start()
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    callers[1].start()
    time.sleep(0.3)
    return ran, release, callers


def test_an_idle_dealer_s_order_runs_in_its_caller_s_thread_and_the_next_one_waits_for_it() -> None:
    """No hand-over when nothing of the dealer's is waiting: the caller deals with its own order.
    An order arriving meanwhile goes to the dealer thread, which takes it only after that one."""
    ran, release, callers = _second_behind_a_caller_s_own()
    assert [name for name, _ in ran] == ["first"]  # the second waits behind the caller's own
    release.set()
    for caller in callers:
        caller.join(timeout=10)
    assert ran[0] == ("first", callers[0])
    assert ran[1][0] == "second" and ran[1][1] in dealers.threads


def test_closing_the_dealers_while_a_caller_deals_with_its_own_deals_with_those_held_behind_it() -> None:
    ran, release, callers = _second_behind_a_caller_s_own()
    closing = threading.Thread(target=dealers.close)
    closing.start()
    release.set()
    for thread in [*callers, closing]:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert [name for name, _ in ran] == ["first", "second"]


def test_a_batch_whose_versions_redis_does_not_give_fails_its_orders_and_its_dealer_deals_on(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch reads its caches' versions from Redis before its first order. When Redis refuses the
    connection, the batch's callers get that error (the API answers it 503) and the dealer thread
    deals with the next orders once Redis is back: it does not die with its queue in it."""
    monkeypatch.setattr(versions, "_hot", {"dealer-test"})  # a seeded cache: every batch reads its version
    running, release = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def first(savepoint: bool) -> Order:
        running.set()
        release.wait(10)
        return Order()

    def submit(key: str, run: Callable[[bool], Order]) -> None:
        try:
            dealers.submit(7, run)
            outcomes[key] = "done"
        except redis.ConnectionError:
            outcomes[key] = "unavailable"

    callers = [threading.Thread(target=submit, args=("first", first))]
    callers[0].start()
    assert running.wait(10)  # dealt with by its caller: the next ones are held behind it
    for key in ("a", "b"):
        callers.append(threading.Thread(target=submit, args=(key, lambda savepoint: Order())))
        callers[-1].start()
    time.sleep(0.3)
    working = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    sync_client.cache_clear()
    try:
        release.set()  # a and b go to the thread together: one batch
        for caller in callers:
            caller.join(timeout=10)
            assert not caller.is_alive()
    finally:
        settings.REDIS_URL = working
        sync_client.cache_clear()
    assert outcomes == {"first": "done", "a": "unavailable", "b": "unavailable"}

    ran, release, callers = _second_behind_a_caller_s_own()
    release.set()
    for caller in callers:
        caller.join(timeout=10)
        assert not caller.is_alive()
    assert ran[1][0] == "second" and ran[1][1] in dealers.threads
