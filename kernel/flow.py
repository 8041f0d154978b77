"""Transport back-pressure for ASGI WebSocket apps: the stream server (livermore/webserver.py)
registers a TransportFlow as the Twisted push producer of each WebSocket connection and puts it in
the scope's extensions, so the app knows when the client is not reading, and can hand text frames
straight to the WebSocket protocol. No Django, no Twisted."""

import asyncio
from collections.abc import Callable

FLOW_EXTENSION = "kernel.flow"


class TransportFlow:
    """Twisted IPushProducer: paused while the transport's buffer is over its limit."""

    def __init__(self, send_text: Callable[[str], None]) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.send_text = send_text

    def pauseProducing(self) -> None:
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        self.writable.set()
