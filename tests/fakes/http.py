"""A real HTTP/1.1 server on 127.0.0.1 (a free port) for venue fakes, in a background thread so both
sync clients (Celery tasks, services) and asyncio clients can talk to it. Handlers return a
`Response`, or a `Stream` (chunked transfer, one chunk per item, `DROP` cuts the socket mid-stream).

`tls = True` before `start()` serves HTTPS with a certificate made for the run (`ca_file` is what a
client trusts): for official SDKs that only speak https (coinbase-advanced-py)."""

import datetime
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DROP = object()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Stream:
    chunks: Iterator[Any]  # bytes, or DROP
    headers: dict[str, str] = field(default_factory=dict)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


class HttpFake:
    """Subclasses implement `handle(request)`. `fail_next` queues canned answers served first."""

    def __init__(self, *, tls: bool = False) -> None:
        self.requests: list[Request] = []
        self.forced: deque[Response] = deque()
        self.stopping = threading.Event()
        self.tls = tls  # or set before start()
        self._server: ThreadingHTTPServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file = ""

    def handle(self, request: Request) -> Response | Stream:
        raise NotImplementedError

    def fail_next(
        self, count: int, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        for _ in range(count):
            self.forced.append(Response(status, body, dict(headers or {})))

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._dispatch()

            def do_POST(self) -> None:
                self._dispatch()

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query), self.headers, body)
                fake.requests.append(request)
                answer = fake.forced.popleft() if fake.forced else fake.handle(request)
                if isinstance(answer, Stream):
                    self._stream(answer)
                else:
                    self._respond(answer)

            def _respond(self, response: Response) -> None:
                payload = response.encoded()
                self.send_response(response.status)
                headers = {"Content-Type": "application/json", **response.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, stream: Stream) -> None:
                self.send_response(200)
                for name, value in {"Content-Type": "application/json", **stream.headers}.items():
                    self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                try:
                    for chunk in stream.chunks:
                        if chunk is DROP or fake.stopping.is_set():
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory()
            cert_file, key_file = self_signed(Path(self._tmp.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.ca_file = str(cert_file)
        threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
