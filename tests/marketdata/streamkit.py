"""Helpers for the /ws/v1/stream tests: clients, a market feeding quotes through the real
LP manager -> QuotePublisher path, and the stream server as a real process."""

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from livermore.asgi import application
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.publisher import QuotePublisher
from marketdata.quotes import Quote, now_ns

ROOT = Path(__file__).resolve().parents[2]
ASGI_APP = "livermore.asgi:application"


def bearer(user: Any) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())]


@contextlib.asynccontextmanager
async def connected(user: Any | None = None, **kwargs: Any) -> AsyncIterator[WebsocketCommunicator]:
    headers = bearer(user) if user is not None else []
    comm = WebsocketCommunicator(application, "/ws/v1/stream", headers=headers, **kwargs)
    ok, _ = await comm.connect()
    assert ok
    try:
        yield comm
    finally:
        await comm.disconnect()


async def frames_until(comm: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    return [await comm.receive_json_from(timeout=3) for _ in range(count)]


class Market:
    """A real LP manager feeding a real QuotePublisher, publishing through Redis."""

    def __init__(self) -> None:
        self.publisher = QuotePublisher()
        self.manager = LPManager({"sim": VenueSettings(priority=1, stale_after_ms=60_000)}, [self.publisher])
        self.task: asyncio.Task[None] | None = None

    def quote(self, symbol: str, bid: str, ask: str) -> int:
        ts = now_ns()
        self.manager.on_quote(Quote(symbol, "sim", Decimal(bid), Decimal(ask), venue_ts=ts, recv_ts=ts))
        return self.manager.seq[symbol]

    async def __aenter__(self) -> "Market":
        self.task = asyncio.create_task(self.publisher.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def settle(self) -> None:
        """Wait until the publisher has flushed everything it was given."""
        for _ in range(200):
            if not self.publisher.pending:
                await asyncio.sleep(0.02)
                return
            await asyncio.sleep(0.01)


def free_listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def stream_server(env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[str]:
    """The stream server (daphne with flow control) as a real process on a free port; yields its
    ws:// base URL. The listening socket is bound here and handed over, so there is no port race."""
    sock = free_listening_socket()
    port = sock.getsockname()[1]
    log = open(log_path or os.devnull, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "livermore.webserver", "--fd", str(sock.fileno()), ASGI_APP],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        pass_fds=[sock.fileno()],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sock.close()
    try:
        _wait_until_serving(port, proc)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_until_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    import http.client
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stream server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("stream server did not start")


def loads(raw: str | bytes) -> dict[str, Any]:
    return json.loads(raw)
