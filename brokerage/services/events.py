"""Account events and watcher notices, published after commit (the Outbox of a dealing call)."""

import contextlib
import json
import logging
import queue
import threading
from typing import Literal, overload

from django.db import transaction

from kernel import metrics
from kernel.redis import sync_client
from kernel.sysevents import SystemEventKind, system_event_emit
from marketdata.hub import Envelope, batch_wire, envelope

from ..models import TradingAccount
from ..payloads import (
    AccountEventName,
    AccountEventPayload,
    AccountNotice,
    AccountPayload,
    DealPayload,
    MarginCallPayload,
    OrderPayload,
    PositionPayload,
    StopOutPayload,
)
from .channels import routed_channel, triggers_channel

log = logging.getLogger(__name__)


PUBLISH_BATCH_MAX = 500


class _Publisher:
    """Sends committed transactions' events from one background thread, so a fill never waits on
    Redis and events of one account keep their commit order. What queued up while the last batch was
    sent goes out in one round trip (a stream message per account), so the cost per fill falls as the
    rate rises. Events are notifications (the state is in the database): ones queued when the process
    dies are lost."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Outbox] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def put(self, outbox: "Outbox") -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="account-events", daemon=True)
                    self.thread.start()
        self.queue.put(outbox)

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < PUBLISH_BATCH_MAX:
                    batch.append(self.queue.get_nowait())
            try:
                self._send(batch)
            except Exception:
                log.exception("events of accounts %s not sent", sorted({o.account.number for o in batch}))

    def _send(self, batch: list["Outbox"]) -> None:
        """Notices, and the events as one channel-layer message per account group (published as the
        layer publishes them, marketdata.hub.batch_wire), in one Redis pipeline: one round trip
        (sending each group's message through the layer took one each, and an event loop's turn).
        The payloads go as they are: their types (brokerage.payloads) hold only strings, numbers,
        booleans, None and lists of those, which the layer's msgpack carries as a round trip through
        JSON (marketdata.hub.plain) would leave them."""
        by_group: dict[str, list[Envelope]] = {}
        for outbox in batch:
            for event, data in outbox.events:
                by_group.setdefault(outbox.account.stream_group, []).append(
                    envelope(outbox.targets, event, data)
                )
        with sync_client().pipeline(transaction=False) as pipe:
            for outbox in batch:
                if not (outbox.triggers_changed or outbox.routed):
                    continue
                notice = json.dumps(AccountNotice(account=outbox.account.pk))
                if outbox.triggers_changed:
                    pipe.publish(triggers_channel(), notice)
                if outbox.routed:
                    pipe.publish(routed_channel(), notice)
            for group, envelopes in by_group.items():
                pipe.publish(*batch_wire(group, envelopes))
            pipe.execute()


_publisher = _Publisher()


class Outbox:
    """Account events, trigger-change and routed-order notices collected during a transaction, sent
    after commit."""

    def __init__(self, account: TradingAccount) -> None:
        self.account = account
        self.events: list[tuple[AccountEventName, AccountEventPayload]] = []
        self.triggers_changed = False
        self.routed = False

    @overload
    def add(self, event: Literal["account"], data: AccountPayload) -> None: ...
    @overload
    def add(self, event: Literal["order"], data: OrderPayload) -> None: ...
    @overload
    def add(self, event: Literal["position"], data: PositionPayload) -> None: ...
    @overload
    def add(self, event: Literal["deal"], data: DealPayload) -> None: ...
    @overload
    def add(self, event: Literal["margin_call"], data: MarginCallPayload) -> None: ...
    @overload
    def add(self, event: Literal["stop_out"], data: StopOutPayload) -> None: ...
    def add(self, event: AccountEventName, data: AccountEventPayload) -> None:
        self.events.append((event, data))

    @property
    def targets(self) -> list[tuple[str, str]]:
        return [(self.account.stream_group, self.account.stream_channel)]

    def commit(self) -> None:
        if self.events or self.triggers_changed or self.routed:
            transaction.on_commit(lambda: _publisher.put(self))
        notices = [(name, data) for name, data in self.events if name in ("margin_call", "stop_out")]
        if notices:
            transaction.on_commit(lambda: self._notify(notices))

    def _notify(self, notices: list[tuple[AccountEventName, AccountEventPayload]]) -> None:
        """Margin calls and stop-outs as system events, for the desk."""
        for name, data in notices:
            level = data.get("margin_level") or "-"
            if name == "margin_call":
                text = f"margin level {level}% (call at {data.get('margin_call_level')}%)"
                kind = SystemEventKind.MARGIN_CALL
            else:
                text = (
                    f"position #{data.get('position')} closed at margin level "
                    f"{data.get('margin_level_before')}% (stop-out at {data.get('stop_out_level')}%)"
                )
                kind = SystemEventKind.STOP_OUT
            metrics.MARGIN_EVENTS.labels(kind=name).inc()
            system_event_emit(kind, subject=f"account {self.account.number}", text=text)
