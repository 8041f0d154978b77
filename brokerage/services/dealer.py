"""Group commit for orders: the dealers of a process put the fills of several accounts in one
transaction, so they share one commit (one WAL flush) instead of paying one each.

`order_submit`, called outside a transaction, hands its order to the dealer of its account (accounts
are spread over `DEALING_DEALERS` dealer threads by id, so one account's orders keep their order) and
waits for the outcome. When nothing of that dealer's is waiting or being dealt with, the caller deals
with its order itself, alone, as the per-order path always did: an idle desk adds no latency, not even
a hand-off to the dealer thread and back; orders arriving meanwhile are held and queued for the thread
when it is done. When orders are waiting (the dealer was busy with the last transaction), the dealer
thread takes them and whatever arrives within `DEALING_BATCH_MS` of the first one (at most
`DEALING_BATCH_MAX`) and runs them in one transaction, in account order (ascending ids,
so two dealers never wait on each other's locks in a cycle). The orders first run without savepoints
(two round trips per order fewer): when one is refused or fails, that transaction rolls back, the
order keeps its error (it met the same state at the same place in the batch) and its neighbours run
again, each in its own savepoint with the database's deferred rules (the balanced ledger) checked at
its statements, so a failing order rolls back alone and its neighbours commit. Each attempt locks
its accounts in one statement and reads their exposures in one more (`locks.locked_ahead`): an
account's first order takes them from there, not from two statements of its own. When those rules
refuse the first transaction's commit, all of its orders run again that way. Each order is written
exactly once: by the one transaction that commits it, and a transaction that does not
commit reports its failure to every caller in it, as does a batch whose versions Redis did not give
(nothing of it ran): the dealer thread never dies with orders queued behind it. Callers get their
result after the commit, and the account events follow it.
"""

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from kernel import versions

from ..models import Order
from .locks import locked_ahead


@dataclass(eq=False)
class _Request:
    account_id: int
    run: Callable[[bool], Order]  # its argument: whether the order's writes take a savepoint
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: Order | None = None
    error: BaseException | None = None

    def outcome(self) -> Order:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Dealer:
    """One dealer thread and its queue; the thread has its own database connection."""

    def __init__(self, name: str) -> None:
        self.queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self.batches = 0  # transactions of more than one order, and the orders they held
        self.batched = 0
        # Orders of this dealer's accounts not yet dealt with (queued, held, or being dealt with by
        # the thread or by a caller), whether a caller is dealing with its own, and the orders that
        # arrived meanwhile (queued when it is done, so the thread wakes once): guarded by `lock`.
        self.pending = 0
        self.inline = False
        self.held: list[_Request | None] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, request: _Request) -> Order:
        """Deal with the order in the caller's thread when nothing of this dealer's is waiting or
        being dealt with (no hand-over to the dealer thread and back); else queue it for the thread,
        which takes it after the orders ahead of it, the caller's own included."""
        with self.lock:
            inline = self.pending == 0
            self.pending += 1
            if inline:
                self.inline = True
            elif self.inline:
                self.held.append(request)
            else:
                self.queue.put(request)
        if inline:
            try:
                self._one(request)
            finally:
                with self.lock:
                    self.pending -= 1
                    self.inline = False
                    for held in self.held:
                        self.queue.put(held)
                    self.held = []
        return request.outcome()

    def close(self) -> None:
        """Stop the thread once it has dealt with what is queued, and held behind a caller's own."""
        with self.lock:
            if self.inline:
                self.held.append(None)
            else:
                self.queue.put(None)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:  # closed: everything queued before was dealt with
                connection.close()
                return
            batch = [first] if self.queue.empty() else self._collect(first)
            if len(batch) == 1:
                self._one(first)
            else:
                self._batch(batch)
            with self.lock:
                self.pending -= len(batch)
            if connection.errors_occurred:
                connection.close_if_unusable_or_obsolete()

    def _collect(self, first: _Request) -> list[_Request]:
        batch = [first]
        deadline = first.arrived + settings.DEALING_BATCH_MS / 1000
        while len(batch) < settings.DEALING_BATCH_MAX:
            try:
                request = self.queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if request is None:
                self.queue.put(None)  # close after this batch
                break
            batch.append(request)
        return batch

    def _one(self, request: _Request) -> None:
        try:
            with versions.pinned():  # the versions the order's caches check, in one round trip
                request.result = request.run(True)
        except BaseException as exc:  # the caller's to handle, as if it had run the order itself
            request.error = exc
        request.done.set()

    def _batch(self, batch: list[_Request]) -> None:
        ordered = sorted(batch, key=lambda r: r.account_id)  # stable: one account's stay in order
        try:
            with versions.pinned(ahead=True):  # its caches' versions (routing, trading states): one read
                again = self._attempt(ordered, savepoints=False)
                if again:
                    self._attempt(again, savepoints=True)
        except BaseException as exc:  # the versions were not read (Redis did not answer): nothing ran
            self._fail(ordered, exc)  # (the attempts report their own failures and raise nothing)
        self.batches += 1
        self.batched += len(ordered)
        for request in ordered:
            request.done.set()

    def _attempt(self, ordered: list[_Request], *, savepoints: bool) -> list[_Request]:
        """Run the orders in one transaction; returns those to run again, each in its savepoint.
        With savepoints, the database's deferred rules are checked at each statement and a failing
        order rolls back alone. Without, the first order that fails rolls the transaction back and
        keeps its error, and the others run again; all of them do when the deferred rules refuse
        the commit (which does not say whose order broke them)."""
        try:
            with transaction.atomic():
                if savepoints:
                    with connection.cursor() as cursor:
                        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                accounts = {r.account_id for r in ordered}
                with locked_ahead(accounts) if len(accounts) > 1 else contextlib.nullcontext():
                    for request in ordered:
                        try:
                            request.result = request.run(savepoints)
                        except Exception as exc:
                            request.error = exc
                            if not savepoints:  # it may have written: the whole transaction rolls back
                                transaction.set_rollback(True)
                                return self._reset([r for r in ordered if r is not request])
        except IntegrityError as exc:
            if not savepoints:  # refused at commit: nothing was written
                return self._reset(ordered)
            self._fail(ordered, exc)
        except BaseException as exc:  # nothing committed: every order of the batch failed with it
            self._fail(ordered, exc)
        return []

    @staticmethod
    def _reset(requests: list[_Request]) -> list[_Request]:
        for request in requests:
            request.result = None
        return requests

    @staticmethod
    def _fail(requests: list[_Request], exc: BaseException) -> None:
        for request in requests:
            if request.error is None:
                request.result, request.error = None, exc


class _Dealers:
    """The dealer threads of this process, started on first use (and again in a forked child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.dealers: list[_Dealer] = []
        self.threads: set[threading.Thread] = set()

    def enabled(self) -> bool:
        """Whether order_submit hands its order to a dealer: batching is on, the caller is not in a
        transaction of its own (its order must commit with it) and is not a dealer."""
        return (
            settings.DEALING_BATCH_MS > 0
            and not connection.in_atomic_block
            and threading.current_thread() not in self.threads
        )

    def batched(self) -> tuple[int, int]:
        """Batches run in this process so far, and the orders they held."""
        return sum(d.batches for d in self.dealers), sum(d.batched for d in self.dealers)

    def close(self) -> None:
        """Stop this process's dealers once they have dealt with what is queued, closing their
        database connections; the next order starts them again."""
        with self.lock:
            if self.pid != os.getpid():
                return
            for dealer in self.dealers:
                dealer.close()
            for dealer in self.dealers:
                dealer.thread.join()
            self.pid, self.dealers, self.threads = 0, [], set()

    def submit(self, account_id: int, run: Callable[[bool], Order]) -> Order:
        if self.pid != os.getpid():
            with self.lock:
                if self.pid != os.getpid():
                    count = max(settings.DEALING_DEALERS, 1)
                    self.dealers = [_Dealer(f"dealer-{i}") for i in range(count)]
                    self.threads = {d.thread for d in self.dealers}
                    self.pid = os.getpid()
        return self.dealers[account_id % len(self.dealers)].submit(_Request(account_id, run))


dealers = _Dealers()
