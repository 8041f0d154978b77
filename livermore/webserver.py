"""`python -m livermore.webserver [--processes N] [daphne options] livermore.asgi:application`: daphne,
plus transport back-pressure for WebSocket apps (scope["extensions"]["kernel.flow"], see flow.py).

With --processes N (N > 1) it runs N daphne processes on the same host and port, each with its own
listening socket bound with SO_REUSEPORT, so the kernel spreads connections over them and the web
tier uses more than one core (a process is bound to one by the GIL). Each process has its own
stream hub, as when web processes run behind a load balancer; the parent stops them all together.

Plain daphne never blocks an ASGI `send`: a client that stops reading grows the server's buffer
without bound and the app cannot tell. With the flow extension the stream consumer sees it (the
transport pauses once the kernel buffer, capped here, and Twisted's 64 KiB are full), keeps its own
bounded queue, conflates, and closes the slow client. The extension also sends text frames straight
to the WebSocket protocol, skipping the per-message ASGI middleware layers (the stream's hot path).

The client address in every scope is the peer's, or, from one of settings.TRUSTED_PROXIES, the one
the proxies forwarded (kernel/clientip.py); daphne's own --proxy-headers handling, which believes the
leftmost X-Forwarded-For entry from anyone, is overridden.
"""

import argparse
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
from functools import partial
from typing import Any

import autobahn.util
import daphne.http_protocol
from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server

from kernel.clientip import resolve_scope, trusted_proxies
from kernel.flow import FLOW_EXTENSION, TransportFlow

# Caps the kernel's send buffer of a WebSocket connection (Linux otherwise grows it to megabytes),
# so a client that stops reading shows as back-pressure within a bounded amount of data.
SEND_BUFFER_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1  # linux/prctl.h

# autobahn builds the arguments of its per-frame debug log line (click-coloured names) even when
# debug logging is off; without colours that costs a quarter less CPU per frame sent.
autobahn.util._HAS_CLICK = False


class RawBodyRequest(WebRequest):
    """Twisted parses urlencoded and multipart POST bodies into `request.args`, which daphne never
    reads (the application gets the raw body): its Content-Type parsing alone, through the email
    package, took a tenth of the web process's CPU per API request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False


daphne.http_protocol.WebRequest = RawBodyRequest


class FlowControlServer(Server):
    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        resolve_scope(scope, _peer(protocol), trusted_proxies())
        if scope.get("type") == "websocket":
            flow = TransportFlow(partial(_send_text, protocol))
            if getattr(protocol.transport, "producer", None) is not None:
                protocol.transport.unregisterProducer()  # the HTTP channel it was upgraded from
            protocol.registerProducer(flow, True)
            protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            scope["extensions"] = {**(scope.get("extensions") or {}), FLOW_EXTENSION: flow}
        return super().create_application(protocol, scope)


def _peer(protocol: Any) -> tuple[str, int] | None:
    """The TCP peer of an HTTP request or a WebSocket connection (None on a Unix socket)."""
    transport = getattr(protocol, "transport", None) or getattr(
        getattr(protocol, "channel", None), "transport", None
    )
    address = transport.getPeer() if transport is not None else None
    if address is None or not hasattr(address, "host"):
        return None
    return str(address.host), int(address.port)


def _send_text(protocol: Any, text: str) -> None:
    """What daphne does for a websocket.send of text, minus the ASGI layers: the stream's hot path."""
    if protocol.state == protocol.STATE_OPEN:
        protocol.sendMessage(text.encode(), False)


class FlowControlCommandLine(CommandLineInterface):
    server_class = FlowControlServer


def _options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("-b", "--bind", dest="host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int)
    return parser.parse_known_args(argv)


def _serve_on_shared_port(host: str, port: int, daphne_argv: list[str]) -> None:
    """One of several processes: its own SO_REUSEPORT socket on the shared port, adopted by daphne."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    sys.argv = [sys.argv[0], "--fd", str(sock.fileno()), *daphne_argv]
    FlowControlCommandLine.entrypoint()


def _own_session_dying_with_parent() -> None:
    """In the child: signals sent to the supervisor's process group (Ctrl-C, a supervisor's killpg)
    reach only the supervisor, which forwards each once (twisted fails on a second SIGTERM while it
    stops); and the child gets SIGTERM if the supervisor itself dies."""
    os.setsid()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _supervise(processes: int, argv: list[str]) -> int:
    """Start the processes; when one ends or a stop signal comes, stop them all."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "livermore.webserver", "--reuse-port", *argv],
            preexec_fn=_own_session_dying_with_parent,
        )
        for _ in range(processes)
    ]

    def stop(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _, status = os.wait()
    stop(signal.SIGTERM, None)
    for child in children:
        child.wait()
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    options, daphne_argv = _options(sys.argv[1:])
    if options.reuse_port:
        _serve_on_shared_port(options.host, options.port, daphne_argv)
    elif options.processes > 1:
        if options.port is None:
            raise SystemExit("--processes needs a --port")
        sys.exit(_supervise(options.processes, sys.argv[1:]))
    else:
        port = ["-p", str(options.port)] if options.port is not None else []
        sys.argv = [sys.argv[0], "-b", options.host, *port, *daphne_argv]
        FlowControlCommandLine.entrypoint()


if __name__ == "__main__":
    main()
