"""A WebSocket server that completes the handshake and then closes at once: the venue behaviour
that used to make the streaming adapters reconnect about four times a second forever."""

import time

from websockets.asyncio.server import Server, ServerConnection, serve


class AcceptThenClose:
    def __init__(self) -> None:
        self.connected_at: list[float] = []  # time.monotonic() of each accepted connection
        self._server: Server | None = None

    async def __aenter__(self) -> "AcceptThenClose":
        self._server = await serve(self._handler, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{next(iter(self._server.sockets)).getsockname()[1]}"

    @property
    def connects(self) -> int:
        return len(self.connected_at)

    async def _handler(self, ws: ServerConnection) -> None:
        self.connected_at.append(time.monotonic())
        await ws.close(1011, "going away")
