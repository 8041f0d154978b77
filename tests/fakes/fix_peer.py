"""A scripted FIX 4.4 acceptor on a raw socket, written independently of QuickFIX so tests can make
it misbehave: skip sequence numbers, go silent, resend, duplicate. It computes BodyLength and
CheckSum itself (PROTOCOLS.md section 5) and keeps its own sequence numbers."""

import queue
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

SOH = "\x01"


def sending_time(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, tz=UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def encode(
    msg_type: str,
    body: Sequence[tuple[int, str]],
    *,
    sender: str,
    target: str,
    seq: int,
    header_extra: Sequence[tuple[int, str]] = (),
) -> bytes:
    header = [(35, msg_type), (49, sender), (56, target), (34, str(seq)), (52, sending_time()), *header_extra]
    payload = "".join(f"{t}={v}{SOH}" for t, v in [*header, *body])
    head = f"8=FIX.4.4{SOH}9={len(payload.encode())}{SOH}"
    checksum = sum((head + payload).encode()) % 256
    return f"{head}{payload}10={checksum:03d}{SOH}".encode()


def decode(frame: bytes) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in frame.decode().split(SOH) if p]  # type: ignore[misc]


def verify(frame: bytes) -> None:
    """Raise if BodyLength or CheckSum is wrong (QuickFIX's framing, checked from the outside)."""
    text = frame.decode()
    body_start = text.index(SOH, text.index("9=")) + 1
    trailer = text.rindex("10=")
    declared = int(text[text.index("9=") + 2 : body_start - 1])
    assert declared == len(text[body_start:trailer].encode()), "BodyLength"
    assert int(text[trailer + 3 : -1]) == sum(text[:trailer].encode()) % 256, "CheckSum"


class Msg(dict[str, str]):
    """First value per tag, plus the ordered pairs for repeating groups."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        for tag, value in pairs:
            self.setdefault(tag, value)
        self.pairs = pairs

    @property
    def type(self) -> str:
        return self["35"]

    @property
    def seq(self) -> int:
        return int(self["34"])

    def all(self, tag: str) -> list[str]:
        return [v for t, v in self.pairs if t == tag]


class FixPeer:
    """Accepts one initiator connection at a time. By default it answers Logon, TestRequest and
    Logout like a polite venue; every received message is also queued for the test to inspect."""

    def __init__(
        self, *, sender: str = "PEER", target: str = "LIVERMORE", tls: ssl.SSLContext | None = None
    ) -> None:
        self.sender, self.target = sender, target
        self.tls = tls
        self.tls_failures = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None
        self.inbox: queue.Queue[Msg] = queue.Queue()
        self.next_out = 1
        self.next_in = 1
        self.auto_logon = True
        # when set, a Logon is answered with a Logout carrying this text, then the line is dropped
        self.refuse_logon = ""
        self.logon_times: list[float] = []  # monotonic arrival of every Logon
        self.auto_heartbeat = True
        self.connections = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- wire --------------------------------------------------------------------------------------
    def send(
        self,
        msg_type: str,
        body: Sequence[tuple[int, str]] = (),
        *,
        seq: int | None = None,
        header_extra: Sequence[tuple[int, str]] = (),
    ) -> int:
        with self.lock:
            if seq is None:
                seq = self.next_out
                self.next_out += 1
            frame = encode(
                msg_type, body, sender=self.sender, target=self.target, seq=seq, header_extra=header_extra
            )
            assert self.conn is not None, "no initiator connected"
            self.conn.sendall(frame)
        return seq

    def expect(self, msg_type: str, *, timeout: float = 5.0, where: dict[str, str] | None = None) -> Msg:
        """The next received message of this type (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {msg_type} within {timeout}s")
            try:
                msg = self.inbox.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg.type == msg_type and all(msg.get(k) == v for k, v in (where or {}).items()):
                return msg

    def drain(self) -> list[Msg]:
        out = []
        while True:
            try:
                out.append(self.inbox.get_nowait())
            except queue.Empty:
                return out

    def disconnect(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def close(self) -> None:
        self._stop.set()
        self.disconnect()
        self.server.close()
        self._thread.join(timeout=2)

    # -- serving -----------------------------------------------------------------------------------
    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            if self.tls is not None:
                try:
                    conn.settimeout(5)
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.tls_failures += 1
                    conn.close()
                    continue
            with self.lock:
                self.conn = conn
                self.connections += 1
            self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                self.disconnect()
                return
            buffer += chunk
            while (end := buffer.find(b"\x0110=")) >= 0 and (stop := buffer.find(b"\x01", end + 1)) >= 0:
                frame, buffer = buffer[: stop + 1], buffer[stop + 1 :]
                verify(frame)
                msg = Msg(decode(frame))
                self.inbox.put(msg)
                self._react(msg)

    def _react(self, msg: Msg) -> None:
        self.next_in = msg.seq + 1
        if msg.type == "A":
            self.logon_times.append(time.monotonic())
        if msg.type == "A" and self.refuse_logon:
            self.send("5", [(58, self.refuse_logon)])
            self.disconnect()
        elif msg.type == "A" and self.auto_logon:
            if msg.get("141") == "Y":
                self.next_out = 1
            self.send("A", [(98, "0"), (108, msg["108"]), *([(141, "Y")] if msg.get("141") == "Y" else [])])
        elif msg.type == "1" and self.auto_heartbeat:
            self.send("0", [(112, msg["112"])])
        elif msg.type == "5":
            self.send("5")
