"""The runfix runtime: one QuickFIX SocketInitiator per enabled FixSession row, settings built in
memory, sequence numbers in a FileStore (PersistMessages=N: what a gap fill covers is re-issued
from memory where safe), refused logons backed off, and the traffic logged from the application
callbacks with secrets redacted (no FileLog, no ScreenLog). docs/fix.md describes the recovery.

Threads: QuickFIX runs each initiator's socket and callbacks on its own thread; callbacks never
raise into QuickFIX. Market data goes to a batching Redis publisher thread, log lines to a batching
database writer thread. The engine's main loop (the caller's thread) reloads configuration,
executes operator commands, sends the order outbox, and exports session state to Redis.
"""

import dataclasses
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import quickfix as qf
from django.conf import settings
from django.db import close_old_connections, connection

from brokerage.services import routed_channel
from kernel.redis import sync_client
from kernel.sysevents import SystemEventKind, system_event_emit
from marketdata.adapters.fix import QuoteRow, encode_rows, fixmd_channel
from marketdata.quotes import now_ns

from . import messages, services, wire
from .book import Book, Top
from .channels import state_key, wake_channel
from .config import SessionConfig, settings_text
from .models import CommandAction, Direction
from .selectors import fix_commands_pending, fix_session_configs
from .tls import TlsTunnel

log = logging.getLogger(__name__)

MD_TYPES = frozenset({"W", "X"})
ORDER_TYPES = frozenset({"D", "F", "G"})
# Sent application messages a gap fill may have to stand in for (Recovery): kept in memory only
RECOVERABLE_TYPES = frozenset({"V", "D", "F", "G", "H", "AN"})
SENT_KEPT = 10_000
BEACON_INTERVAL_S = 1.0  # liveness beacons of logged-on market-data sessions (QuotePublisher.beacon)
LOGON_BACKOFF_CAP_S = 300.0  # the longest wait between logons the LP refused


# -- shared sinks ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LogLine:
    session_id: int
    direction: str
    msg_type: str
    seq: int
    raw: str
    at_ns: int


class MessageLogWriter(threading.Thread):
    """Batches redacted log lines into the FixMessage table so callbacks never wait on the database."""

    def __init__(self, *, flush_interval_s: float = 0.2) -> None:
        super().__init__(name="fix-log-writer", daemon=True)
        self.lines: queue.SimpleQueue[LogLine] = queue.SimpleQueue()
        self.flush_interval_s = flush_interval_s
        self.stopping = threading.Event()

    def put(self, line: LogLine) -> None:
        self.lines.put(line)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.stopping.wait(self.flush_interval_s)
            self.flush()
        connection.close()

    def flush(self) -> None:
        batch: list[LogLine] = []
        while len(batch) < 5000:
            try:
                batch.append(self.lines.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        try:
            services.fix_messages_record(lines=batch)
        except Exception:
            log.exception("could not write %d FIX log lines", len(batch))
            close_old_connections()


class QuotePublisher(threading.Thread):
    """Publishes top-of-book rows per venue on Redis pub/sub in batches (one message per wake-up)."""

    def __init__(self, *, interval_s: float = 0.002) -> None:
        super().__init__(name="fix-md-publisher", daemon=True)
        self.rows: queue.SimpleQueue[tuple[str, QuoteRow | None]] = queue.SimpleQueue()
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.published = 0

    def put(self, venue_code: str, row: QuoteRow) -> None:
        self.rows.put((venue_code, row))

    def beacon(self, venue_code: str) -> None:
        """Publish an empty batch for the venue: its FIX session is alive even if no price moved, so
        the market loop keeps its quiet books (marketdata.adapters.fix)."""
        self.rows.put((venue_code, None))

    def run(self) -> None:
        client = sync_client()
        while not self.stopping.is_set():
            try:
                first = self.rows.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(self.interval_s)
            by_venue: dict[str, list[QuoteRow]] = defaultdict(list)
            item: tuple[str, QuoteRow | None] | None = first
            while item is not None:
                venue, row = item
                rows = by_venue[venue]  # a beacon (row None) still makes the venue's batch, empty
                if row is not None:
                    rows.append(row)
                try:
                    item = self.rows.get_nowait()
                except queue.Empty:
                    item = None
            try:
                pipe = client.pipeline(transaction=False)
                for venue, rows in by_venue.items():
                    pipe.publish(fixmd_channel(venue), encode_rows(rows))
                pipe.execute()
                self.published += sum(len(r) for r in by_venue.values())
            except Exception as exc:
                log.warning("fix market data publish failed (%d venues): %s", len(by_venue), exc)


# -- one session -------------------------------------------------------------------------------------
@dataclass
class SessionState:
    logged_on: bool = False
    logons: int = 0
    logon_at_ns: int = 0
    last_in_ns: int = 0
    last_out_ns: int = 0
    last_heartbeat_in_ns: int = 0
    last_logout_text: str = ""
    # venue symbol -> MDReqID of its live subscription
    subscribed: dict[str, str] = field(default_factory=dict)
    # MDReqID -> venue symbol, for every request we sent (subscribe or unsubscribe)
    requests: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    post_logon_due: bool = False
    operator_reset: bool = False
    # refused logons in a row (the LP answered our Logon with a Logout), and when to try again
    refusals: int = 0
    retry_at: float = 0.0  # monotonic; 0: no back-off in progress
    refusal_due: bool = False
    operator_down: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """An application message we sent, kept (in memory, never on disk) until a gap fill may need it."""

    seq: int
    msg_type: str
    fields: dict[str, str]  # first value per tag


class SessionHandler:
    """Everything one session does with its messages. Callback methods run on QuickFIX's thread."""

    def __init__(self, cfg: SessionConfig, engine: "FixEngine") -> None:
        self.cfg = cfg
        self.engine = engine
        self.sid = qf.SessionID(cfg.begin_string, cfg.sender_comp_id, cfg.target_comp_id)
        self.state = SessionState()
        self.book = Book()
        self.lock = threading.RLock()
        self._req_seq = 0
        self._symbol_map = dict(cfg.symbols)
        self.sent: dict[int, Sent] = {}  # by MsgSeqNum, oldest first
        self.resend_ranges: list[tuple[int, int]] = []  # asked for, gap fill not yet sent
        self.recovery: list[Sent] = []  # covered by a gap fill: for the engine to re-issue

    # QuickFIX session access (None while the initiator has not created it, or after stop)
    def session(self) -> qf.Session | None:
        return qf.Session.lookupSession(self.sid)

    def send(self, msg: qf.Message) -> bool:
        return bool(qf.Session.sendToTarget(msg, self.sid))

    # -- callbacks ----------------------------------------------------------------------------------
    def on_logon(self) -> None:
        with self.lock:
            st = self.state
            st.logged_on, st.logons, st.logon_at_ns = True, st.logons + 1, now_ns()
            refusals, st.refusals, st.retry_at = st.refusals, 0, 0.0
            st.subscribed.clear()
            st.requests.clear()
            st.rejected.clear()
            st.post_logon_due = True
            if st.operator_reset:
                st.operator_reset = False
                session = self.session()
                if session is not None:
                    session.setResetOnLogon(self.cfg.reset_on_logon)
        log.info("fix session=%s logged on (logon #%d)", self.cfg.name, self.state.logons)
        text = f"logon #{self.state.logons}"
        if refusals:
            log.info("fix session=%s logon accepted after %d refused", self.cfg.name, refusals)
            text += f", accepted after {refusals} refused"
        system_event_emit(SystemEventKind.FIX_LOGON, subject=self.cfg.name, text=text)
        self.engine.wake()

    def on_logout(self) -> None:
        with self.lock:
            was = self.state.logged_on
            self.state.logged_on = False
            self.state.subscribed.clear()
            self.state.requests.clear()
            self.book.clear()
        reason = self.state.last_logout_text or "-"
        if was:
            log.info("fix session=%s logged out: %s", self.cfg.name, reason)
            system_event_emit(SystemEventKind.FIX_LOGOUT, subject=self.cfg.name, text=f"logged out: {reason}")

    def to_admin(self, msg: qf.Message) -> None:
        msg_type = msg.getHeader().getField(35)
        if msg_type == "A":
            if self.cfg.username:
                msg.setField(553, self.cfg.username)
            if self.cfg.password:
                msg.setField(554, self.cfg.password)
        self.outgoing(msg)

    def outgoing(self, msg: qf.Message) -> None:
        self.state.last_out_ns = now_ns()
        # Every QuickFIX call releases the GIL and may wait for it back behind busy threads: the
        # message is read once, as text.
        raw = msg.toString()
        msg_type = wire.msg_type(raw)
        fm = wire.field_map(raw)
        self.record(Direction.OUT, msg_type, raw, fm)
        if msg_type in RECOVERABLE_TYPES:
            seq = int(fm.get("34", "0"))
            with self.lock:
                self.sent[seq] = Sent(seq, msg_type, fm)
                while len(self.sent) > SENT_KEPT:
                    del self.sent[next(iter(self.sent))]
        elif msg_type == "4" and fm.get("123") == "Y":
            self.on_gap_fill_sent()
        if msg_type in ORDER_TYPES and self.engine.desk is not None:
            self.engine.desk.on_sent(self, fm)

    def incoming(self, msg: qf.Message) -> tuple[str, str]:
        raw = msg.toString()
        msg_type = wire.msg_type(raw)
        at = self.state.last_in_ns = now_ns()
        if msg_type == "0":
            self.state.last_heartbeat_in_ns = at
        elif msg_type == "5":
            self.state.last_logout_text = wire.field_map(raw).get("58", "")
            if not self.state.logged_on:
                self.on_logon_refused()
        elif msg_type == "2":
            self.on_resend_request(wire.field_map(raw))
        elif msg_type == "4":
            fields = wire.field_map(raw)
            system_event_emit(
                SystemEventKind.FIX_SEQUENCE_RESET,
                subject=self.cfg.name,
                text=f"new inbound seq {fields.get('36', '?')} (gap fill {fields.get('123', 'N')})",
            )
        self.record(Direction.IN, msg_type, raw)
        return msg_type, raw

    # -- recovery of what a gap fill covered ----------------------------------------------------------
    def on_resend_request(self, fields: dict[str, str]) -> None:
        """QuickFIX answers a ResendRequest with one SequenceReset-GapFill (PersistMessages=N): note
        the range, so that what we sent in it is re-issued once the gap fill is out."""
        try:
            begin, end = int(fields.get("7", "0")), int(fields.get("16", "0"))
        except ValueError:
            return
        with self.lock:
            self.resend_ranges.append((begin, end or sys.maxsize))

    def on_gap_fill_sent(self) -> None:
        """Our gap fill is being sent (toAdmin, under QuickFIX's session lock: whatever the engine
        re-issues goes out after it, with new sequence numbers)."""
        with self.lock:
            ranges, self.resend_ranges = self.resend_ranges, []
            covered = [seq for seq in self.sent if any(begin <= seq <= end for begin, end in ranges)]
            self.recovery += [self.sent.pop(seq) for seq in covered]
        if covered:
            self.engine.wake()

    def take_recovery(self) -> list[Sent]:
        with self.lock:
            items, self.recovery = self.recovery, []
        return items

    def reissue_market_data(self, items: list[Sent]) -> None:
        """A subscription the gap fill swallowed is made again (a new MDReqID) if it is still wanted;
        an unsubscribe is repeated if the symbol is still unsubscribed."""
        with self.lock:
            for item in items:
                if item.msg_type != "V":
                    continue
                req_id, symbol = item.fields.get("262", ""), item.fields.get("55", "")
                if item.fields.get("263") == "1" and self.state.subscribed.get(symbol) == req_id:
                    del self.state.subscribed[symbol]
                    self.state.requests.pop(req_id, None)
                elif item.fields.get("263") == "2" and symbol not in self.state.subscribed:
                    self.send(messages.md_request(req_id, symbol, subscribe=False))
        self.sync_subscriptions()

    # -- refused logons ------------------------------------------------------------------------------
    def on_logon_refused(self) -> None:
        """The LP answered our Logon with a Logout: the engine backs off (LogonBackoff)."""
        with self.lock:
            self.state.refusals += 1
            self.state.refusal_due = True
        self.engine.wake()

    def logon_backoff_s(self) -> float:
        """ReconnectInterval doubled per refusal in a row, up to LOGON_BACKOFF_CAP_S."""
        n = min(self.state.refusals, 32)
        return min(max(LOGON_BACKOFF_CAP_S, self.cfg.reconnect_s), self.cfg.reconnect_s * 2 ** (n - 1))

    def record(self, direction: str, msg_type: str, raw: str, fields: dict[str, str] | None = None) -> None:
        if msg_type in MD_TYPES and not self.cfg.log_market_data:
            return
        seq = (fields if fields is not None else wire.field_map(raw)).get("34", "0")
        self.engine.log_writer.put(
            LogLine(self.cfg.id, direction, msg_type, int(seq), wire.redact(raw), now_ns())
        )

    def from_app(self, msg_type: str, raw: str) -> None:
        if msg_type == "X":
            self.on_md_incremental(raw)
        elif msg_type == "W":
            self.on_md_snapshot(raw)
        elif msg_type == "Y":
            self.on_md_reject(raw)
        elif self.engine.desk is not None:
            self.engine.desk.on_message(self, msg_type, raw)

    # -- market data ---------------------------------------------------------------------------------
    def on_md_snapshot(self, raw: str) -> None:
        head, entries = wire.split_groups(wire.fields(raw), "269")
        symbol = head.get("55", "")
        if symbol not in self._symbol_map:
            return
        top = self.book.snapshot(symbol, entries, self._entry_ts(head, entries[0] if entries else {}))
        self.publish(symbol, top)

    def on_md_incremental(self, raw: str) -> None:
        head, entries = wire.split_groups(wire.fields(raw), "279")
        touched: dict[str, Top] = {}
        symbol = ""
        for entry in entries:
            symbol = entry.get("55", symbol)
            if symbol in self._symbol_map:
                touched[symbol] = self.book.update(symbol, entry, self._entry_ts(head, entry))
        for sym, top in touched.items():
            self.publish(sym, top)

    def on_md_reject(self, raw: str) -> None:
        fm = wire.field_map(raw)
        with self.lock:
            symbol = self.state.requests.pop(fm.get("262", ""), None)
            if symbol is None:
                return
            if self.state.subscribed.get(symbol) == fm.get("262"):
                del self.state.subscribed[symbol]
            self.state.rejected[symbol] = f"{fm.get('281', '?')}: {fm.get('58', '')}".strip()
            self.book.clear(symbol)
        log.warning(
            "fix session=%s market data for %s rejected (%s)",
            self.cfg.name,
            symbol,
            self.state.rejected[symbol],
        )

    @staticmethod
    def _entry_ts(head: dict[str, str], entry: dict[str, str]) -> int:
        try:
            if "272" in entry and "273" in entry:
                return wire.utc_date_time_ns(entry["272"], entry["273"])
            return wire.utc_timestamp_ns(head["52"])
        except (KeyError, ValueError):
            return now_ns()

    def alive(self, now: int) -> bool:
        """Logged on and heard from within 2 HeartBtInt + 1 s. A live peer sends a Heartbeat every
        HeartBtInt, or answers the TestRequest QuickFIX sends after a HeartBtInt of silence (its
        timer ticks once a second); QuickFIX logs out a peer silent for 2.4 HeartBtInt."""
        st = self.state
        return st.logged_on and now - st.last_in_ns <= (2 * self.cfg.heartbeat_s + 1) * 1_000_000_000

    def publish(self, symbol: str, top: Top) -> None:
        if top.complete and self.cfg.venue_code:
            assert top.bid.price is not None and top.ask.price is not None
            self.engine.quotes.put(
                self.cfg.venue_code,
                (symbol, top.bid.price, top.ask.price, top.bid.size, top.ask.size, top.ts_ns),
            )

    def sync_subscriptions(self) -> None:
        """Subscribe the configured symbols not yet subscribed (except rejected ones), drop the rest."""
        if not self.cfg.market_data:
            return
        with self.lock:
            if not self.state.logged_on:
                return
            wanted = set(self._symbol_map)
            for symbol in sorted(wanted - set(self.state.subscribed) - set(self.state.rejected)):
                self._req_seq += 1
                req_id = f"{symbol}.{self.state.logons}.{self._req_seq}"
                self.state.subscribed[symbol] = req_id
                self.state.requests[req_id] = symbol
                self.send(messages.md_request(req_id, symbol, subscribe=True))
            for symbol in sorted(set(self.state.subscribed) - wanted):
                req_id = self.state.subscribed.pop(symbol)
                self.send(messages.md_request(req_id, symbol, subscribe=False))
                self.book.clear(symbol)
            for symbol in set(self.state.rejected) - wanted:
                del self.state.rejected[symbol]

    def reconfigure(self, cfg: SessionConfig) -> None:
        """Apply changes that need no reconnect (symbols, logging, credentials for the next logon)."""
        self.cfg = cfg
        self._symbol_map = dict(cfg.symbols)
        self.sync_subscriptions()

    # -- state ---------------------------------------------------------------------------------------
    def snapshot(self, running: bool) -> dict[str, object]:
        session = self.session()
        with self.lock:
            st = self.state
            return {
                "name": self.cfg.name,
                "running": running,
                "enabled": bool(session.isEnabled()) if session is not None else False,
                "logged_on": bool(session.isLoggedOn()) if session is not None else False,
                "next_out": int(session.getExpectedSenderNum()) if session is not None else None,
                "next_in": int(session.getExpectedTargetNum()) if session is not None else None,
                "logons": st.logons,
                "logon_at_ms": st.logon_at_ns // 1_000_000 or None,
                "last_in_ms": st.last_in_ns // 1_000_000 or None,
                "last_out_ms": st.last_out_ns // 1_000_000 or None,
                "last_heartbeat_ms": st.last_heartbeat_in_ns // 1_000_000 or None,
                "last_logout_text": st.last_logout_text,
                "logon_refusals": st.refusals,
                "logon_retry_in_s": round(max(0.0, st.retry_at - time.monotonic()), 1)
                if st.retry_at
                else None,
                "subscribed": sorted(st.subscribed),
                "rejected": dict(st.rejected),
                "pid": os.getpid(),
                "updated_ms": now_ns() // 1_000_000,
            }


class FixApplication(qf.Application):
    """QuickFIX callbacks, delegated to the session's handler; nothing escapes into QuickFIX."""

    def __init__(self, handler: SessionHandler) -> None:
        super().__init__()
        self.handler = handler

    def onCreate(self, session_id: qf.SessionID) -> None:
        log.info("fix session=%s created (%s)", self.handler.cfg.name, session_id.toString())

    def onLogon(self, session_id: qf.SessionID) -> None:
        self._guard(self.handler.on_logon)

    def onLogout(self, session_id: qf.SessionID) -> None:
        self._guard(self.handler.on_logout)

    def toAdmin(self, message: qf.Message, session_id: qf.SessionID) -> None:
        self._guard(self.handler.to_admin, message)

    def fromAdmin(self, message: qf.Message, session_id: qf.SessionID) -> None:
        def handle() -> None:
            msg_type, raw = self.handler.incoming(message)
            if msg_type == "3":
                self.handler.from_app(msg_type, raw)

        self._guard(handle)

    def toApp(self, message: qf.Message, session_id: qf.SessionID) -> None:
        self._guard(self.handler.outgoing, message)

    def fromApp(self, message: qf.Message, session_id: qf.SessionID) -> None:
        def handle() -> None:
            msg_type, raw = self.handler.incoming(message)
            self.handler.from_app(msg_type, raw)

        self._guard(handle)

    def _guard(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("fix session=%s callback %s failed", self.handler.cfg.name, fn.__name__)


class SessionRunner:
    """One initiator for one session. QuickFIX keeps raw pointers to the settings, the store factory
    and the application, so this object holds them for as long as the initiator lives."""

    def __init__(self, cfg: SessionConfig, engine: "FixEngine") -> None:
        self.cfg = cfg
        self.handler = SessionHandler(cfg, engine)
        self.app = FixApplication(self.handler)
        store = engine.store_dir / cfg.name
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tunnel: TlsTunnel | None = None
        connect_to = cfg
        if cfg.tls:
            self.tunnel = TlsTunnel(cfg.host, cfg.port, ca_file=cfg.tls_ca_file, name=cfg.name)
            connect_to = dataclasses.replace(cfg, host="127.0.0.1", port=self.tunnel.local_port)
        self.settings = qf.SessionSettings()
        self.settings.setFromString(settings_text(connect_to, store_dir=store))
        self.store_factory = qf.FileStoreFactory(self.settings)
        self.initiator: qf.Initiator | None = qf.SocketInitiator(self.app, self.store_factory, self.settings)
        self.running = False

    def start(self) -> None:
        assert self.initiator is not None
        if self.cfg.next_sender_seq and self.cfg.next_target_seq:
            # Before the initiator builds the session, which loads its numbers from the store.
            store = self.store_factory.create(qf.UtcTimeStamp.now(), self.handler.sid)
            store.setNextSenderMsgSeqNum(self.cfg.next_sender_seq)
            store.setNextTargetMsgSeqNum(self.cfg.next_target_seq)
            self.store_factory.destroy(store)
            services.fix_session_seqnums_applied(
                session_id=self.cfg.id, sender=self.cfg.next_sender_seq, target=self.cfg.next_target_seq
            )
            log.info(
                "fix session=%s starts at sender seq %d, target seq %d (operator cut-over)",
                self.cfg.name,
                self.cfg.next_sender_seq,
                self.cfg.next_target_seq,
            )
        if self.tunnel is not None:
            self.tunnel.start()
        self.initiator.start()
        self.running = True
        log.info("fix session=%s initiator started -> %s:%d", self.cfg.name, self.cfg.host, self.cfg.port)

    def stop(self) -> None:
        """Log out and destroy the initiator: QuickFIX unregisters its sessions only in the
        destructor, and a new initiator for the same SessionID needs them gone."""
        if self.initiator is not None:
            self.initiator.stop()
            self.initiator = None
            if self.tunnel is not None:
                self.tunnel.stop()
            self.running = False
            self.handler.on_logout()
            log.info("fix session=%s initiator stopped", self.cfg.name)


# -- the engine --------------------------------------------------------------------------------------
class FixEngine:
    def __init__(
        self,
        *,
        store_dir: Path | None = None,
        reload_interval_s: float = 2.0,
        state_interval_s: float = 1.0,
        tick_s: float = 0.25,
        only: set[str] | None = None,
        desk_factory: Callable[["FixEngine"], "Desk"] | None = None,
    ) -> None:
        self.store_dir = store_dir or settings.FIX_STORE_DIR
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store_dir.chmod(0o700)
        self.reload_interval_s = reload_interval_s
        self.state_interval_s = state_interval_s
        self.tick_s = tick_s
        self.only = only
        self.runners: dict[int, SessionRunner] = {}
        self.log_writer = MessageLogWriter()
        self.quotes = QuotePublisher()
        self.desk = desk_factory(self) if desk_factory else None
        self._wake = threading.Event()
        self.stopping = threading.Event()
        self._next_reload = self._next_state = self._next_beacon = 0.0

    def wake(self) -> None:
        self._wake.set()

    def handlers(self) -> list[SessionHandler]:
        return [r.handler for r in self.runners.values()]

    def handler_named(self, name: str) -> SessionHandler | None:
        return next((h for h in self.handlers() if h.cfg.name == name), None)

    # -- lifecycle -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Run until `stopping` is set; then log out every session and flush the sinks."""
        # QuickFIX's threads wait for the GIL on every callback: hand it over sooner than every 5 ms.
        sys.setswitchinterval(0.0005)
        self.log_writer.start()
        self.quotes.start()
        listener = threading.Thread(target=self._listen, name="fix-wake", daemon=True)
        listener.start()
        if self.desk is not None:
            self.desk.start()
        try:
            while not self.stopping.is_set():
                self.step()
                self._wake.wait(self.tick_s)
                self._wake.clear()
        finally:
            for runner in list(self.runners.values()):
                runner.stop()
                sync_client().delete(state_key(runner.cfg.name))
            self.runners.clear()
            if self.desk is not None:
                self.desk.stop()
            self.log_writer.stopping.set()
            self.quotes.stopping.set()
            self.log_writer.join(timeout=5)
            self.log_writer.flush()
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.wake()

    def _listen(self) -> None:
        """Redis notifications (new outbox rows, operator commands, orders the dealing engine routed)
        wake the main loop at once."""
        routed = routed_channel().encode()
        while not self.stopping.is_set():
            try:
                pubsub = sync_client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(wake_channel(), routed)
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        if message["channel"] == routed and self.desk is not None:
                            self.desk.notify_routed()
                        self.wake()
                pubsub.close()
            except Exception as exc:
                log.warning("fix wake listener: %s; retrying", exc)
                self.stopping.wait(1.0)

    def step(self) -> None:
        try:
            mono = time.monotonic()
            if mono >= self._next_reload:
                self._next_reload = mono + self.reload_interval_s
                self.reload()
            self.commands_run()
            for handler in self.handlers():
                self.logon_backoff(handler, mono)
                if items := handler.take_recovery():
                    self.recover(handler, items)
                if handler.state.post_logon_due and handler.state.logged_on:
                    handler.state.post_logon_due = False
                    handler.sync_subscriptions()
                    if self.desk is not None:
                        self.desk.after_logon(handler)
            if self.desk is not None:
                self.desk.pump()
            if mono >= self._next_beacon:
                self._next_beacon = mono + BEACON_INTERVAL_S
                now = now_ns()
                for handler in self.handlers():
                    if handler.cfg.market_data and handler.cfg.venue_code and handler.alive(now):
                        self.quotes.beacon(handler.cfg.venue_code)
            if mono >= self._next_state:
                self._next_state = mono + self.state_interval_s
                self.state_export()
        except Exception:
            log.exception("fix engine step failed")
            close_old_connections()

    def logon_backoff(self, handler: SessionHandler, mono: float) -> None:
        """A refused logon disables the session's reconnects (QuickFIX's Session.logout while
        disconnected) for ReconnectInterval x 2^(refusals-1), capped; then logons resume. Logged and
        raised as the system event fix.logon_refused once per episode (until a logon is accepted)."""
        st = handler.state
        session = handler.session()
        if st.refusal_due:
            st.refusal_due = False
            delay = handler.logon_backoff_s()
            st.retry_at = mono + delay
            if session is not None and not st.operator_down:
                session.logout("logon refused")
            if st.refusals == 1:
                log.warning(
                    "fix session=%s logon refused (%s); retrying with back-off (first in %gs, at most %gs)",
                    handler.cfg.name,
                    st.last_logout_text or "-",
                    delay,
                    max(LOGON_BACKOFF_CAP_S, handler.cfg.reconnect_s),
                )
                system_event_emit(
                    SystemEventKind.FIX_LOGON_REFUSED,
                    subject=handler.cfg.name,
                    text=f"refused: {st.last_logout_text or '-'}",
                )
            else:
                log.debug("fix session=%s logon refused again (#%d)", handler.cfg.name, st.refusals)
        elif st.retry_at and mono >= st.retry_at:
            st.retry_at = 0.0
            if session is not None and not st.operator_down:
                session.logon()

    def recover(self, handler: SessionHandler, items: list[Sent]) -> None:
        """Re-issue what a gap fill covered, where that is safe (never a new order)."""
        log.warning(
            "fix session=%s a gap fill covered %d sent messages (%s); re-issuing what is safe",
            handler.cfg.name,
            len(items),
            ",".join(sorted({i.msg_type for i in items})),
        )
        handler.reissue_market_data(items)
        if self.desk is not None:
            self.desk.recover(handler, items)

    def reload(self) -> None:
        """Start, restart or stop initiators to match the enabled FixSession rows."""
        configs = {c.id: c for c in fix_session_configs() if self.only is None or c.name in self.only}
        for session_id, runner in list(self.runners.items()):
            cfg = configs.get(session_id)
            if (
                cfg is None
                or cfg.connection_key() != runner.cfg.connection_key()
                or cfg.name != runner.cfg.name
            ):
                runner.stop()
                del self.runners[session_id]
                sync_client().delete(state_key(runner.cfg.name))
            elif cfg != runner.handler.cfg:
                runner.handler.reconfigure(cfg)
        for session_id, cfg in configs.items():
            if session_id not in self.runners:
                runner = SessionRunner(cfg, self)
                self.runners[session_id] = runner
                runner.start()

    def commands_run(self) -> None:
        for command in fix_commands_pending():
            runner = self.runners.get(command.session_id)
            session = runner.handler.session() if runner else None
            if runner is None or session is None:
                result = "session not running (disabled or outside runfix's sessions)"
            elif command.action == CommandAction.CONNECT:
                state = runner.handler.state
                state.operator_down, state.refusals, state.retry_at = False, 0, 0.0
                session.logon()
                result = "logon enabled"
            elif command.action == CommandAction.POSITIONS:
                if self.desk is None or not runner.handler.state.logged_on or not runner.cfg.trading:
                    result = "not a logged-on trading session"
                else:
                    self.desk.request_positions(runner.handler)
                    result = "RequestForPositions sent"
            elif command.action == CommandAction.DISCONNECT:
                runner.handler.state.operator_down = True
                session.logout("operator disconnect")
                result = "logged out; stays down until connect"
            else:
                runner.handler.state.operator_reset = True
                session.setResetOnLogon(True)
                session.reset()
                result = "sequence numbers reset to 1; next logon carries ResetSeqNumFlag"
            services.fix_command_complete(command=command, result=result)
            log.info("fix session=%s command %s: %s", command.session_id, command.action, result)

    def state_export(self) -> None:
        pipe = sync_client().pipeline(transaction=False)
        for runner in self.runners.values():
            state = runner.handler.snapshot(runner.running)
            pipe.set(
                state_key(runner.cfg.name), json.dumps(state), ex=max(10, int(self.state_interval_s * 10))
            )
        pipe.execute()


class Desk(Protocol):
    """The trading side of the engine (orders and positions, fix/desk.py)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def after_logon(self, handler: SessionHandler) -> None: ...

    def pump(self) -> None: ...

    def notify_routed(self) -> None: ...

    def on_message(self, handler: SessionHandler, msg_type: str, raw: str) -> None: ...

    def request_positions(self, handler: SessionHandler) -> None: ...

    def on_sent(self, handler: SessionHandler, fields: dict[str, str]) -> None: ...

    def recover(self, handler: SessionHandler, items: list[Sent]) -> None: ...
