"""The stream hub: ONE channel-layer channel per web process, fanned out in memory to the local
/ws/v1/stream connections.

Producers in any process send envelopes with the channel layer's `group_send`:
`{"type": "stream.envelope", "targets": [[group, channel], ...], "event", "data", "key", "seq"}`,
or several as `{"type": "stream.batch", "envelopes": [...]}` (the quote publisher). The hub of each
web process (one per event loop) joins the layer group of a stream group while a local connection
is subscribed to it, reads its one layer channel, and offers the frame
`{"type": event, "channel": channel, "data": data}` to the outbox of every local connection
subscribed to one of the targets' groups, once per connection (the first target it is subscribed to
names the channel). `key` and `seq` make a frame conflatable state (a quote: key = symbol); without
them it is an event that is never dropped.

Every quote travels once, on the layer group `quotes._all`, and each hub filters per symbol locally:
quote volume is bounded, and one publish per quote costs less than one per group. A group_send per
connection would cost a Redis message and a task wake-up per delivery; the hub costs one decode per
message per process and an in-memory append per connection.
"""

import asyncio
import contextlib
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder

from kernel.aio import cancel_and_wait
from kernel.ws import USER_REVOKED, USERS_REVOKED_GROUP
from marketdata.outbox import Outbox

log = logging.getLogger(__name__)

Envelope = dict[str, Any]

ENVELOPE = "stream.envelope"
BATCH = "stream.batch"
JOINED = "stream.joined"  # a hub's own probe: its layer group subscription is live
ALL_QUOTES_GROUP = "quotes._all"
JOIN_CONFIRM_S = 2.0
SEND_TIMEOUT_S = 10.0


def layer_group(group: str) -> str:
    """The channel-layer group that carries a stream group."""
    return ALL_QUOTES_GROUP if group.startswith("quotes.") else group


def envelope(
    targets: Iterable[tuple[str, str]],
    event: str,
    data: Any,
    *,
    key: str | None = None,
    seq: int | None = None,
) -> Envelope:
    """`data` must already be msgpack-serialisable (see `plain`); the first target's group routes it."""
    return {
        "type": ENVELOPE,
        "targets": [list(t) for t in targets],
        "event": event,
        "data": data,
        "key": key,
        "seq": seq,
    }


def plain(data: Any) -> Any:
    """JSON-shaped data (Decimal, datetime, UUID as strings): what the layer's msgpack can carry."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def frame(**fields: Any) -> str:
    return json.dumps(fields, cls=DjangoJSONEncoder, separators=(",", ":"))


async def asend(env: Envelope) -> None:
    await get_channel_layer().group_send(layer_group(env["targets"][0][0]), env)


def batch_wire(group: str, envelopes: list[Envelope]) -> tuple[str, bytes]:
    """The Redis channel and payload of the envelopes of one layer group as one message, as the
    layer's group_send publishes it (channels_redis' pub/sub layer): for a publish made with others
    in one round trip (the quote publisher's fenced script, the account events' pipeline)."""
    layer: Any = get_channel_layer()
    # The layer's group channel name (RedisPubSubLoopLayer._get_group_channel_name) from its
    # configured prefix: the per-loop layer that holds it needs a running event loop.
    channel = f"{layer._kwargs.get('prefix', 'asgi')}__group__{group}"
    return channel, layer.serialize({"type": BATCH, "envelopes": envelopes})


_sender: tuple[int, asyncio.AbstractEventLoop] | None = None
_sender_lock = threading.Lock()


def _sender_loop() -> asyncio.AbstractEventLoop:
    """An event loop of this process's own, in a daemon thread, for sync senders: async_to_sync
    cannot run in a thread whose loop is running, and elsewhere would open a Redis connection (a new
    loop) per call. Recreated in a forked child (a Celery worker), where the thread does not exist."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="stream-send", daemon=True).start()
            _sender = (os.getpid(), loop)
        return _sender[1]


def send(env: Envelope) -> None:
    """Sync `asend`, from any thread (Celery tasks, the candle thread, a running loop's thread);
    returns once Redis has the message."""
    asyncio.run_coroutine_threadsafe(asend(env), _sender_loop()).result(timeout=SEND_TIMEOUT_S)


class StreamHub:
    """Runs while at least one connection of this event loop is attached."""

    def __init__(self) -> None:
        self.groups: dict[str, set[Outbox]] = {}  # stream group -> local outboxes (joined while present)
        self.joined: dict[str, int] = {}  # layer group -> stream groups of `groups` it carries
        self.attached = 0
        self.lock = asyncio.Lock()
        self.layer: Any = None
        self.channel = ""
        self.task: asyncio.Task[None] | None = None
        self.probes: dict[str, asyncio.Future[None]] = {}
        self.users: dict[int, set[Callable[[], object]]] = {}  # user id -> its connections' close

    async def attach(self) -> None:
        async with self.lock:
            self.attached += 1
            if self.task is None:
                self.layer = get_channel_layer()
                self.channel = await self.layer.new_channel("stream-hub.")
                self.task = asyncio.create_task(self._receive(), name="stream-hub")
                await self.layer.group_add(USERS_REVOKED_GROUP, self.channel)

    async def detach(self) -> None:
        async with self.lock:
            self.attached -= 1
            if self.attached == 0 and self.task is not None:
                for group in [*self.joined, USERS_REVOKED_GROUP]:
                    await self.layer.group_discard(group, self.channel)
                self.joined.clear()
                self.groups.clear()
                task, self.task = self.task, None
                await cancel_and_wait(task)  # the layer drops the channel when its receive is cancelled

    async def add(self, group: str, outbox: Outbox) -> None:
        """Returns once this process receives what is sent to the group from now on."""
        outboxes = self.groups.get(group)
        if outboxes is None:
            async with self.lock:
                outboxes = self.groups.get(group)
                if outboxes is None:
                    await self._join(layer_group(group))
                    outboxes = self.groups[group] = set()
        outboxes.add(outbox)

    async def discard(self, group: str, outbox: Outbox) -> None:
        outboxes = self.groups.get(group)
        if outboxes is None:
            return
        outboxes.discard(outbox)
        if outboxes:
            return
        async with self.lock:
            if self.groups.get(group) == set():  # nobody came back while we waited
                del self.groups[group]
                await self._leave(layer_group(group))

    def watch_user(self, user_id: int, close: Callable[[], object]) -> None:
        """`close` is called when the user is deactivated (kernel.ws.user_streams_close)."""
        self.users.setdefault(user_id, set()).add(close)

    def unwatch_user(self, user_id: int, close: Callable[[], object]) -> None:
        closes = self.users.get(user_id)
        if closes is not None:
            closes.discard(close)
            if not closes:
                del self.users[user_id]

    def dispatch(self, env: Envelope) -> None:
        groups = self.groups
        delivered: set[Outbox] = set()
        for group, channel in env["targets"]:
            outboxes = groups.get(group)
            if not outboxes:
                continue
            text = frame(type=env["event"], channel=channel, data=env["data"])
            k, seq = env.get("key"), env.get("seq")
            for outbox in outboxes:
                if outbox not in delivered:
                    delivered.add(outbox)
                    outbox.offer(text, k, seq)

    async def _join(self, group: str) -> None:
        if self.joined.get(group):
            self.joined[group] += 1
            return
        self.joined[group] = 1
        try:
            await self.layer.group_add(group, self.channel)
            await self._confirm(group)
        except BaseException:  # Redis failed or the subscriber went away: not joined
            del self.joined[group]
            with contextlib.suppress(Exception):
                await self.layer.group_discard(group, self.channel)
            raise

    async def _leave(self, group: str) -> None:
        self.joined[group] -= 1
        if not self.joined[group]:
            del self.joined[group]
            await self.layer.group_discard(group, self.channel)

    async def _confirm(self, group: str) -> None:
        """SUBSCRIBE is not acknowledged through the layer: wait until a probe sent to the group
        comes back, so a snapshot read after this is never older than the first update received."""
        token = uuid.uuid4().hex
        probe = self.probes[token] = asyncio.get_running_loop().create_future()
        try:
            await self.layer.group_send(group, {"type": JOINED, "token": token})
            async with asyncio.timeout(JOIN_CONFIRM_S):
                await probe
        except TimeoutError:
            log.warning("stream hub: no confirmation of joining %s within %.1f s", group, JOIN_CONFIRM_S)
        finally:
            del self.probes[token]

    async def _receive(self) -> None:
        layer, channel = self.layer, self.channel
        while True:
            try:
                message = await layer.receive(channel)
                if message["type"] == ENVELOPE:
                    self.dispatch(message)
                elif message["type"] == BATCH:
                    for env in message["envelopes"]:
                        self.dispatch(env)
                elif message["type"] == USER_REVOKED:
                    for close in list(self.users.get(message["user_id"], ())):
                        close()
                elif message["type"] == JOINED:
                    probe = self.probes.get(message["token"])  # other processes' probes: ignored
                    if probe is not None and not probe.done():
                        probe.set_result(None)
            except Exception:
                log.exception("stream hub could not dispatch a message")


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub]" = weakref.WeakKeyDictionary()


def hub() -> StreamHub:
    """The hub of the running event loop (one per daphne process)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = StreamHub()
    return found
