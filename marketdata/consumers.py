"""/ws/v1/stream: authenticate, subscribe to channels, receive a snapshot and then updates.

Every outbound frame goes through the connection's bounded Outbox and one writer task, so
snapshots, updates and replies leave in order. Events reach the Outbox from the process's stream
hub, which holds this process's one channel-layer channel (hub.py). Protocol and close codes:
docs/stream.md.
"""

import asyncio
import json
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from kernel.flow import FLOW_EXTENSION, TransportFlow
from kernel.ws import user_for_token
from marketdata.hub import frame, hub
from marketdata.outbox import Outbox
from marketdata.streams import StreamChannel, channel_handler

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_SLOW_CONSUMER = 4008
MAX_RATE_BOUNDS = (0.1, 100.0)


class StreamConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = None  # no layer channel per connection: the hub has one per process

    async def connect(self) -> None:
        self.subscriptions: dict[str, str] = {}  # channel -> group
        self.hub = hub()
        self.attached = False
        self.wake = asyncio.Event()
        self.outbox = Outbox(
            limit=settings.STREAM_QUEUE_FRAMES,
            max_rate=settings.STREAM_MAX_RATE,
            slow_after_s=settings.STREAM_SLOW_CONSUMER_S,
            on_ready=self.wake.set,
        )
        self.writer: asyncio.Task[None] | None = None
        self.auth_timer: asyncio.Task[None] | None = None
        self.watched_user: int | None = None
        self.revocation: asyncio.Task[None] | None = None
        if self.scope.get("auth_error"):
            await self.close(code=CLOSE_UNAUTHENTICATED)  # a bad token on the handshake: HTTP 403
            return
        await self.accept()
        self.writer = asyncio.create_task(self.write(), name="stream-writer")
        if self.authenticated:
            await self.watch_user()
        else:
            self.auth_timer = asyncio.create_task(self.expect_auth(), name="stream-auth-timeout")

    @property
    def user(self) -> Any:
        return self.scope.get("user")

    @property
    def authenticated(self) -> bool:
        return bool(self.user and self.user.is_authenticated)

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.outbox.offer(frame(type="error", code=code, message=message, **extra))

    async def expect_auth(self) -> None:
        await asyncio.sleep(settings.STREAM_AUTH_TIMEOUT_S)
        if not self.authenticated:
            await self.refuse(
                "unauthenticated", f"Authenticate within {settings.STREAM_AUTH_TIMEOUT_S:g} s of connecting."
            )

    async def refuse(self, code: str, message: str) -> None:
        await self.send(text_data=frame(type="error", code=code, message=message))
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            self.error("malformed", "Frames must be JSON text objects with a string 'type'.")
            return
        try:
            await self.handle(content)
        except Exception:
            log.exception("stream request %r failed", content.get("type"))
            self.error("internal_error", "The request failed; try again.")

    async def handle(self, content: dict[str, Any]) -> None:
        kind = content["type"]
        if kind == "auth":
            await self.authenticate(content.get("token"))
        elif not self.authenticated:
            await self.refuse(
                "unauthenticated", "Authenticate first: session cookie, Bearer header or auth frame."
            )
        elif kind == "subscribe":
            await self.subscribe(content)
        elif kind == "unsubscribe":
            await self.unsubscribe(content)
        elif kind == "ping":
            self.outbox.offer(frame(type="pong", id=content.get("id")))
        else:
            self.error("unknown_type", f"Unknown message type {kind!r}.")

    async def authenticate(self, token: Any) -> None:
        user = await sync_to_async(user_for_token)(token) if isinstance(token, str) else None
        if user is None:
            await self.refuse("invalid_token", "The token is invalid or expired.")
            return
        self.scope["user"] = user
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        await self.watch_user()
        self.outbox.offer(frame(type="authenticated", user=user.get_username()))

    @staticmethod
    def _channels(channels: Any) -> list[str] | None:
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            return None
        return channels

    def _apply_options(self, content: dict[str, Any]) -> bool:
        """`max_rate` (per symbol per second, bounded) and `conflate`; they apply to the connection."""
        conflate, max_rate = content.get("conflate", True), content.get("max_rate")
        if not isinstance(conflate, bool):
            self.error("invalid_option", "'conflate' must be true or false.")
            return False
        low, high = MAX_RATE_BOUNDS
        if max_rate is not None and (
            isinstance(max_rate, bool) or not isinstance(max_rate, int | float) or not low <= max_rate <= high
        ):
            self.error("invalid_option", f"'max_rate' must be a number from {low} to {high}.")
            return False
        if not conflate:
            self.outbox.set_rate(None)
        elif max_rate is not None or "conflate" in content:
            self.outbox.set_rate(max_rate or settings.STREAM_MAX_RATE)
        return True

    async def subscribe(self, content: dict[str, Any]) -> None:
        channels = self._channels(content.get("channels"))
        if channels is None:
            self.error("malformed", "'channels' must be a non-empty list of strings.")
            return
        if not self._apply_options(content):
            return
        accepted: list[tuple[str, str, StreamChannel, str]] = []
        for channel in channels:
            kind, _, arg = channel.partition(":")
            handler = channel_handler(kind)
            group = await sync_to_async(handler.group)(self.user, arg) if handler else None
            if handler is None or group is None:
                self.error("unknown_channel", f"Unknown or forbidden channel {channel!r}.", channel=channel)
            else:
                accepted.append((channel, arg, handler, group))
        if not accepted:
            return
        await self.attach()
        snapshots: list[str] = []
        floors: dict[str, int] = {}
        self.outbox.pause()  # updates queue from here on; the snapshots go out before them
        try:
            for channel, _, _, group in accepted:
                await self.hub.add(group, self.outbox)
                self.subscriptions[channel] = group
            for channel, arg, handler, _ in accepted:
                data = await sync_to_async(handler.snapshot)(self.user, arg)
                snapshots.append(frame(type="snapshot", channel=channel, data=data))
                if hasattr(handler, "floors"):
                    floors.update(handler.floors(data))
        finally:
            self.outbox.resume(snapshots, floors)

    async def unsubscribe(self, content: dict[str, Any]) -> None:
        channels = self._channels(content.get("channels"))
        if channels is None:
            self.error("malformed", "'channels' must be a non-empty list of strings.")
            return
        for channel in channels:
            group = self.subscriptions.pop(channel, None)
            if group is not None and group not in self.subscriptions.values():
                await self.hub.discard(group, self.outbox)
            self.outbox.offer(frame(type="unsubscribed", channel=channel))

    async def write(self) -> None:
        """The only sender after accept: waits for frames, for rate slots and for the transport."""
        flow: TransportFlow | None = (self.scope.get("extensions") or {}).get(FLOW_EXTENSION)
        outbox, wake = self.outbox, self.wake
        check_s = max(settings.STREAM_SLOW_CONSUMER_S / 4, 0.05)
        try:
            while True:
                if outbox.too_slow(time.monotonic()):
                    await self.close_slow()
                    return
                if flow is not None and not flow.writable.is_set():
                    try:
                        async with asyncio.timeout(check_s):
                            await flow.writable.wait()
                    except TimeoutError:
                        continue
                text = outbox.pop()
                if text is None:
                    wake.clear()
                    due = outbox.next_due()
                    try:
                        async with asyncio.timeout(None if due is None else max(due - time.monotonic(), 0)):
                            await wake.wait()
                    except TimeoutError:
                        pass
                elif flow is None:
                    await self.send(text_data=text)
                else:
                    flow.send_text(text)
                    while flow.writable.is_set() and (text := outbox.pop()) is not None:
                        flow.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream writer failed; closing")
            await self.close(code=1011)

    async def attach(self) -> None:
        if not self.attached:
            await self.hub.attach()
            self.attached = True

    async def watch_user(self) -> None:
        """From authentication on, the hub ends this connection if the user is deactivated."""
        await self.attach()
        if self.watched_user is not None:
            self.hub.unwatch_user(self.watched_user, self.revoked)
        self.watched_user = self.user.pk
        self.hub.watch_user(self.user.pk, self.revoked)

    def revoked(self) -> None:
        if self.revocation is None:
            self.revocation = asyncio.create_task(self.close_revoked(), name="stream-revoked")

    async def close_revoked(self) -> None:
        await self.leave_all()
        await self.refuse("revoked", "The user's access was revoked.")

    async def close_slow(self) -> None:
        log.warning(
            "stream: closing slow consumer %s (%d queued, %d conflated)",
            self.scope.get("client"),
            len(self.outbox.ready),
            self.outbox.conflated,
        )
        await self.leave_all()
        await self.close(code=CLOSE_SLOW_CONSUMER)

    async def leave_all(self) -> None:
        groups = set(self.subscriptions.values())
        self.subscriptions.clear()
        for group in groups:
            await self.hub.discard(group, self.outbox)

    async def disconnect(self, code: int) -> None:
        for task in (self.writer, self.auth_timer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.watched_user is not None:
            self.hub.unwatch_user(self.watched_user, self.revoked)
            self.watched_user = None
        try:
            await self.leave_all()
        finally:
            if self.attached:
                self.attached = False
                await self.hub.detach()
