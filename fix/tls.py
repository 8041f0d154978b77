"""TLS to an LP through a loopback tunnel: QuickFIX connects in plain TCP to 127.0.0.1 and this
forwards the bytes over TLS (1.2 or later, the LP's certificate and host name verified against the
session's CA file or the system store). The QuickFIX build in use may lack SSL support (HAVE_SSL),
and Python's ssl verifies host names, which QuickFIX's SSL initiator does not."""

import logging
import selectors
import socket
import ssl
import threading

log = logging.getLogger(__name__)


class TlsTunnel:
    def __init__(self, host: str, port: int, *, ca_file: str = "", name: str = "") -> None:
        self.host, self.port, self.name = host, port, name
        self.context = ssl.create_default_context(cafile=ca_file or None)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.5)
        self.local_port: int = self.server.getsockname()[1]
        self.failures = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"fix-tls-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                local, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(
                target=self._pipe, args=(local,), name=f"fix-tls-{self.name}-pipe", daemon=True
            ).start()

    def _pipe(self, local: socket.socket) -> None:
        try:
            raw = socket.create_connection((self.host, self.port), timeout=10)
            remote = self.context.wrap_socket(raw, server_hostname=self.host)
        except (OSError, ssl.SSLError) as exc:
            self.failures += 1
            log.warning("fix session=%s TLS to %s:%d failed: %s", self.name, self.host, self.port, exc)
            local.close()
            return
        with local, remote, selectors.DefaultSelector() as selector:
            local.setblocking(False)
            remote.setblocking(False)
            selector.register(local, selectors.EVENT_READ, remote)
            selector.register(remote, selectors.EVENT_READ, local)
            while not self.stopping.is_set():
                for key, _ in selector.select(timeout=0.5):
                    if not self._forward(key.fileobj, key.data):  # type: ignore[arg-type]
                        return

    @staticmethod
    def _forward(source: socket.socket, target: socket.socket) -> bool:
        """Move what `source` has to `target`; False when either side is closed."""
        try:
            data = source.recv(65536)
            # TLS records already decrypted inside the SSL object are invisible to the selector
            while isinstance(source, ssl.SSLSocket) and source.pending():
                data += source.recv(source.pending())
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except OSError:
            return False
        if not data:
            return False
        try:
            target.setblocking(True)
            target.sendall(data)
            target.setblocking(False)
        except OSError:
            return False
        return True
