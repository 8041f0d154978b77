"""Candle listeners (settings.CANDLE_LISTENERS) called by the market loop with each closed Bar, the
live quote listener, and the system event listener (settings.SYSTEM_EVENT_LISTENERS)."""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal

from django.conf import settings
from django.db import close_old_connections, connection

from alerts import rules, selectors, services
from alerts.tasks import bar_closed, system_event_record
from kernel.sysevents import SystemEvent
from marketdata.bars import Bar
from marketdata.quotes import SelectedQuote
from marketdata.selectors import quote_list

log = logging.getLogger(__name__)


def on_candle_close(bar: Bar) -> None:
    """Hand a closed bar's indicators and rules to a worker; the market loop must not wait on it."""
    bar_closed.delay(bar.symbol, bar.timeframe, bar.start)


def on_system_event(event: SystemEvent) -> None:
    """A system listener (settings.SYSTEM_EVENT_LISTENERS): a worker routes and queues it."""
    system_event_record.delay(event)


class LiveAlerts:
    def __init__(self) -> None:
        self.rules: dict[str, list[rules.Rule]] = {}
        self.last_mid: dict[str, Decimal] = {}
        self.dropped = 0
        self._executor: ThreadPoolExecutor | None = None
        self._slots: threading.BoundedSemaphore | None = None
        self._next_refresh = 0.0
        self._refreshing = False

    def __call__(self, selected: SelectedQuote) -> None:
        now = time.monotonic()
        if now >= self._next_refresh and not self._refreshing:
            self._refreshing = True
            self._next_refresh = now + settings.ALERTS_LIVE_REFRESH_S
            self._submit(self._refresh)
        quote = selected.quote
        if quote is None or not selected.tradable:
            return
        mid = quote.mid
        symbol = selected.symbol
        prev = self.last_mid.get(symbol)
        self.last_mid[symbol] = mid
        symbol_rules = self.rules.get(symbol)
        if not symbol_rules:
            return
        firings = rules.evaluate_quote(symbol_rules, prev=prev, price=mid, ts_ns=quote.venue_ts)
        if firings:
            self._submit(lambda: self._record(firings, mid))

    def _submit(self, job: Callable[[], None]) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts-live")
            self._slots = threading.BoundedSemaphore(settings.ALERTS_LIVE_QUEUE_MAX)
        slots = self._slots
        assert slots is not None
        if not slots.acquire(blocking=False):
            self.dropped += 1
            log.error("live alerts queue full: dropped a job (%d so far)", self.dropped)
            return
        future = self._executor.submit(self._run, job)
        future.add_done_callback(lambda _: slots.release())

    @staticmethod
    def _run(job: Callable[[], None]) -> None:
        close_old_connections()
        try:
            job()
        except Exception:
            log.exception("live alerts job failed")
        finally:
            close_old_connections()

    def _record(self, firings: list[rules.Firing], price: Decimal) -> None:
        services.alerts_record_live_firings(firings=firings, price=price)

    def _refresh(self) -> None:
        """Swaps in the rules from the database, keeping in-memory progress the database may not
        show yet (a firing still queued behind this job is recorded before the next refresh)."""
        try:
            fresh = selectors.live_rules()
            current = {r.id: r for rs in self.rules.values() for r in rs}
            for symbol_rules in fresh.values():
                for rule in symbol_rules:
                    old = current.get(rule.id)
                    if old is not None and _definition(old) == _definition(rule):
                        rule.state = rule.state.merged(old.state)
            self._seed_mids(list(fresh))
            self.rules = fresh
        finally:
            self._refreshing = False

    def _seed_mids(self, symbols: list[str]) -> None:
        """The previous mid of symbols this process has not seen a quote of yet, from the Redis ticker
        cache (the last quote published before a restart), so the first quote can complete a
        crossing. A quote the loop saw meanwhile is newer and is kept."""
        unseen = [s for s in symbols if s not in self.last_mid]
        if not unseen:
            return
        for wire in quote_list(symbols=unseen):
            if wire["tradable"] and wire["bid"] is not None and wire["ask"] is not None:
                mid = (Decimal(wire["bid"]) + Decimal(wire["ask"])) / 2
                self.last_mid.setdefault(wire["symbol"], mid)

    def flush(self, timeout: float = 10.0) -> None:
        """Waits until queued database work is done (tests, shutdown)."""
        if self._executor is not None:
            done: Future[None] = self._executor.submit(lambda: None)
            done.result(timeout)

    def stop(self) -> None:
        """Called by the market loop once quotes have stopped: queued work is done, then the worker
        thread ends with its database connection closed. The next quote starts a new one, which
        loads the rules afresh."""
        executor, self._executor = self._executor, None
        self._next_refresh = 0.0
        if executor is not None:
            executor.submit(connection.close)
            executor.shutdown(wait=True)


def _definition(rule: rules.Rule) -> tuple[object, ...]:
    """The same rule, not edited since: an edit (or a re-activation) resets the stored state, which
    the in-memory copy must then not carry over."""
    return (
        rule.symbol,
        rule.timeframe,
        rule.condition,
        rule.threshold,
        rule.upper,
        rule.frequency,
        rule.version,
    )


on_quote = LiveAlerts()
