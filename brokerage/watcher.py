"""The trigger watcher: a quote listener (settings.QUOTE_LISTENERS) in the market process.

On every quote it decides in memory (brokerage.triggers.TriggerIndex) which pending orders, stop
losses and take profits the quote crosses and hands each to a bounded thread pool that calls the
service (order_trigger / position_trigger); the service re-checks under the account lock and the
database makes the execution happen once. The market loop never waits on the database.

Keeping the index in step with orders and positions changed by other processes: every service that
changes an account's triggers publishes the account id on a Redis pub/sub channel after commit, and
the watcher reloads that account's triggers. Pub/sub is at-most-once (a message sent while the
subscriber reconnects is lost), so the watcher also reloads everything on every (re)connect and
every `reload_interval_s`. A reload may put back a trigger whose execution is still in flight; the
second attempt then finds the order filled or the position closed and does nothing.

A margin sweep runs every `margin_interval_s` while quotes arrive: accounts holding positions in the
symbols that moved are screened without locks, and those at or below their margin-call level (or
leaving it) go to account_margin_check, which decides under the lock.
"""

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from kernel import metrics
from kernel.redis import sync_client
from marketdata.models import Instrument
from marketdata.quotes import SelectedQuote

from . import services
from .models import Order, OrderStatus, OrderType, Position, PositionStatus, TradingAccount, TradingStatus
from .pricing import Tick
from .quotes import MemoryQuoteSource
from .selectors import Conditions, margin_watchlist, trading_states
from .triggers import Trigger, TriggerIndex, TriggerKind

log = logging.getLogger(__name__)

# The metric's names for the trigger kinds: a pending order's entry, a stop loss, a take profit.
TRIGGER_LABELS: dict[TriggerKind, str] = {"order": "pending", "sl": "sl", "tp": "tp"}


def triggers_load(*, account_id: int | None = None) -> list[Trigger]:
    """Triggers of pending orders and of open positions' SL/TP (of one account, or all). Orders past
    their expiry are left out: the expiry job (or order_trigger, for one already armed) expires them."""
    orders = (
        Order.objects.filter(status=OrderStatus.PENDING)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .select_related("instrument", "account__group")
    )
    positions = (
        Position.objects.filter(status=PositionStatus.OPEN)
        .filter(Q(sl__isnull=False) | Q(tp__isnull=False))
        .select_related("instrument", "account__group")
    )
    if account_id is not None:
        orders, positions = orders.filter(account_id=account_id), positions.filter(account_id=account_id)
    conditions: dict[int, Conditions] = {}

    def markup(account: TradingAccount, instrument: Instrument) -> Decimal:
        if account.group_id not in conditions:
            conditions[account.group_id] = Conditions(account.group)
        return conditions[account.group_id].markup(instrument)

    triggers = []
    for order in orders:
        stop_stage = order.type == OrderType.STOP or (
            order.type == OrderType.STOP_LIMIT and order.stop_triggered_at is None
        )
        level = order.stop_price if stop_stage else order.price
        assert level is not None
        triggers.append(
            Trigger.make(
                kind="order",
                object_id=order.pk,
                account_id=order.account_id,
                symbol=order.instrument.symbol,
                group_id=order.account.group_id,
                instrument_id=order.instrument_id,
                side=order.side,
                rule="stop" if stop_stage else "limit",
                level=level,
                markup=markup(order.account, order.instrument),
            )
        )
    for position in positions:
        for kind in ("sl", "tp"):
            level = getattr(position, kind)
            if level is not None:
                triggers.append(
                    Trigger.make(
                        kind=kind,
                        object_id=position.pk,
                        account_id=position.account_id,
                        symbol=position.instrument.symbol,
                        group_id=position.account.group_id,
                        instrument_id=position.instrument_id,
                        side=position.side,
                        rule=kind,
                        level=level,
                        markup=markup(position.account, position.instrument),
                    )
                )
    return triggers


class TriggerWatcher:
    def __init__(
        self,
        *,
        workers: int = 4,
        max_queued: int = 1000,
        reload_interval_s: float = 30.0,
        margin_interval_s: float = 0.5,
    ) -> None:
        self.index = TriggerIndex()
        self.quotes = MemoryQuoteSource()
        self.lock = threading.Lock()
        self.workers = workers
        self.max_queued = max_queued
        self.reload_interval_s = reload_interval_s
        self.margin_interval_s = margin_interval_s
        self.moved: set[str] = set()
        self.started = False
        self.ready = threading.Event()

    # -- market loop side (must not block) -------------------------------------------------------
    def __call__(self, selected: SelectedQuote) -> None:
        self.quotes.update(selected)
        if not self.started:
            self.start()
        quote = selected.quote
        if not selected.tradable or quote is None:
            return
        with self.lock:
            fired = self.index.fire(selected.symbol, quote.bid, quote.ask)
            self.moved.add(selected.symbol)
        tick = Tick(bid=quote.bid, ask=quote.ask, venue=quote.venue, seq=selected.seq)
        if fired:
            fired = self._unless_halted(fired, tick.venue)
        for trigger in fired:
            self.submit(trigger, tick)

    def _unless_halted(self, fired: list[Trigger], venue: str) -> list[Trigger]:
        """The fired triggers the kill switch lets go to the service; those halted wait, armed, for
        the state to change, without a trip to the database on every quote that crosses them (the
        service would refuse them under the lock: reduce-only is decided there)."""
        states = trading_states()
        go: list[Trigger] = []
        held: list[Trigger] = []
        for trigger in fired:
            restriction = states.effective(
                group_id=trigger.group_id, instrument_id=trigger.instrument_id, venues=(venue,)
            )
            halted = restriction is not None and restriction.state == TradingStatus.HALTED
            (held if halted else go).append(trigger)
        if held:
            with self.lock:
                for trigger in held:
                    self.index.add(trigger)
        return go

    def submit(self, trigger: Trigger, tick: Tick) -> None:
        slots = self.slots
        if not slots.acquire(blocking=False):
            # Saturated: keep the trigger armed so a later quote fires it again.
            with self.lock:
                self.index.add(trigger)
            return
        self.executor.submit(self._execute, trigger, tick, slots)

    # -- worker threads ----------------------------------------------------------------------------
    def _execute(self, trigger: Trigger, tick: Tick, slots: threading.BoundedSemaphore) -> None:
        outcome = "error"
        try:
            close_old_connections()
            if trigger.kind == "order":
                order = services.order_trigger(order_id=trigger.object_id, tick=tick, quotes=self.quotes)
                outcome = "none" if order is None else order.status
            else:
                deal = services.position_trigger(
                    position_id=trigger.object_id, kind=trigger.kind, tick=tick, quotes=self.quotes
                )
                outcome = "none" if deal is None else "closed"
            # Re-arm whatever is still live (e.g. a stop-limit turned limit, a tick that no longer
            # crosses under the lock).
            self.reload_account(trigger.account_id)
        except Exception:
            log.exception("trigger %s on %s failed", trigger.key, trigger.symbol)
        finally:
            metrics.TRIGGER_EXECUTIONS.labels(kind=TRIGGER_LABELS[trigger.kind], outcome=outcome).inc()
            slots.release()

    def _margin_check(self, account_id: int, slots: threading.BoundedSemaphore) -> None:
        try:
            close_old_connections()
            services.account_margin_check(account_id=account_id, quotes=self.quotes)
        except Exception:
            log.exception("margin check of account %s failed", account_id)
        finally:
            slots.release()

    # -- sync thread -------------------------------------------------------------------------------
    def start(self) -> None:
        """Called by the first quote (on the market loop's thread), and again after a stop()."""
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="triggers")
        self.slots = threading.BoundedSemaphore(self.max_queued)
        self.stopping = threading.Event()
        self.ready.clear()
        self.thread = threading.Thread(
            target=self._sync, args=(self.stopping,), name="triggers-sync", daemon=True
        )
        self.started = True
        self.thread.start()

    def stop(self) -> None:
        """Called by the market loop once its adapters have ended (no quote comes any more):
        executions in flight finish, then the threads end with their database connections closed.
        The next quote starts it again. Works on the run it found, even if a new one starts."""
        if not self.started:
            return
        thread, executor, stopping = self.thread, self.executor, self.stopping
        self.started = False
        stopping.set()
        thread.join(timeout=5)
        # One task per worker thread (the barrier holds each until all have one) closes its connection.
        barrier = threading.Barrier(self.workers)

        def close_connection() -> None:
            barrier.wait(timeout=5)
            connection.close()

        for _ in range(self.workers):
            executor.submit(close_connection)
        executor.shutdown(wait=True)

    def reload_all(self) -> None:
        triggers = triggers_load()
        with self.lock:
            self.index.replace_all(triggers)
        log.info("trigger watcher loaded %d triggers", len(triggers))

    def reload_account(self, account_id: int) -> None:
        triggers = triggers_load(account_id=account_id)
        with self.lock:
            self.index.replace_account(account_id, triggers)

    def margin_sweep(self) -> None:
        with self.lock:
            moved, self.moved = self.moved, set()
        if not moved:
            return
        slots, executor = self.slots, self.executor
        for account_id in margin_watchlist(symbols=moved, quotes=self.quotes):
            if slots.acquire(blocking=False):
                executor.submit(self._margin_check, account_id, slots)

    def _sync(self, stopping: threading.Event) -> None:
        pubsub = None
        next_reload = next_sweep = 0.0
        while not stopping.is_set():
            try:
                close_old_connections()
                if pubsub is None:
                    pubsub = sync_client().pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(services.triggers_channel())
                    next_reload = 0.0  # anything published while we were away is lost: reload
                now = time.monotonic()
                if now >= next_reload:
                    self.reload_all()
                    self.ready.set()
                    next_reload = now + self.reload_interval_s
                if now >= next_sweep:
                    self.margin_sweep()
                    next_sweep = now + self.margin_interval_s
                changed: set[int] = set()
                message = pubsub.get_message(timeout=self.margin_interval_s / 2)
                while message is not None:
                    changed.add(int(json.loads(message["data"])["account"]))
                    message = pubsub.get_message(timeout=0)
                for account_id in changed:
                    self.reload_account(account_id)
            except Exception:
                log.exception("trigger watcher sync failed; retrying")
                if pubsub is not None:
                    pubsub.close()
                    pubsub = None
                stopping.wait(1.0)
        if pubsub is not None:
            pubsub.close()
        connection.close()


quote_listener = TriggerWatcher()
