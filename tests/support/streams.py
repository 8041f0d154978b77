"""Listen to stream events the way a web process's stream hub does: a channel-layer channel joined
to the group's layer group."""

import asyncio
import uuid
from types import TracebackType
from typing import Any

from channels.layers import get_channel_layer

from marketdata.hub import BATCH, ENVELOPE, JOINED, layer_group


class StreamTap:
    """Collects the frames sent to one group, as {"event", "channel", "data"}."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.layer = get_channel_layer()
        self.channel = ""
        self.received: list[dict[str, Any]] = []

    async def __aenter__(self) -> "StreamTap":
        self.channel = await self.layer.new_channel("stream-tap.")
        await self.layer.group_add(layer_group(self.group), self.channel)
        probe = {"type": JOINED, "token": uuid.uuid4().hex}  # back once the subscription is live
        await self.layer.group_send(layer_group(self.group), probe)
        async with asyncio.timeout(5):
            while await self.layer.receive(self.channel) != probe:
                pass
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.layer.group_discard(layer_group(self.group), self.channel)

    async def receive(self, within_s: float = 5) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while not self.received:
                message = await self.layer.receive(self.channel)
                kind = message["type"]
                envelopes = [message] if kind == ENVELOPE else message["envelopes"] if kind == BATCH else []
                for env in envelopes:
                    for group, channel in env["targets"]:
                        if group == self.group:
                            self.received.append(
                                {"event": env["event"], "channel": channel, "data": env["data"]}
                            )
            return self.received.pop(0)
