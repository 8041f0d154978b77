"""The per-connection outbound queue of /ws/v1/stream. Pure Python, no Django, no I/O: the consumer's
writer task pops frames from it and sends them.

Frames with a key (a quote's symbol) are state: the newest wins. They are rate-limited per key
(conflation) and, when the queue is full, held one per key until there is room. Frames without a key
(snapshots, pongs, errors, candle and account events) are events: never dropped, never merged.
Per key, frames leave in the order they came in; nothing is ever reordered.
"""

import time
from collections import deque
from collections.abc import Callable

Item = tuple[str, str | None, int | None]  # frame text, key, seq

FLOOR_TTL_S = 5.0


class Outbox:
    def __init__(
        self,
        *,
        limit: int,
        max_rate: float | None,
        slow_after_s: float,
        on_ready: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.interval = 1 / max_rate if max_rate else 0.0
        self.slow_after_s = slow_after_s
        self.on_ready = on_ready
        self.clock = clock
        self.ready: deque[Item] = deque()
        self.held: dict[str, Item] = {}  # key -> newest frame waiting for its rate slot or for room
        self.next_at: dict[str, float] = {}  # key -> when the key may be sent again
        self.floors: dict[str, tuple[int, float]] = {}  # key -> (seq a snapshot already covered, until)
        self.paused_at: int | None = None
        self.congested_since: float | None = None
        self.conflated = 0

    def set_rate(self, max_rate: float | None) -> None:
        self.interval = 1 / max_rate if max_rate else 0.0

    # -- producers --------------------------------------------------------------------------------
    def offer(self, text: str, key: str | None = None, seq: int | None = None) -> None:
        item = (text, key, seq)
        if key is None:
            if len(self.ready) >= self.limit:
                self._congested(self.clock())
            self.ready.append(item)
        else:
            now = self.clock()
            if self.floors and self._covered(key, seq, now):
                return
            if key in self.held:
                self.held[key] = item
                self.conflated += 1
                return
            if self.interval and now < self.next_at.get(key, 0.0):
                self.held[key] = item
                self.on_ready()  # the writer re-arms its timer for the key's slot
                return
            if len(self.ready) >= self.limit:
                self.held[key] = item
                self._congested(now)
                return
            self.ready.append(item)
            if self.interval:
                self.next_at[key] = now + self.interval
        self.on_ready()

    def pause(self) -> None:
        """Hold everything back while a snapshot is read (frames still queue, none leaves)."""
        self.paused_at = len(self.ready)

    def resume(self, snapshots: list[str], floors: dict[str, int]) -> None:
        """Put the snapshot frames where the pause began, before anything that arrived during the
        read; drop queued frames the snapshot already covers (per key, seq <= floor)."""
        at = self.paused_at if self.paused_at is not None else len(self.ready)
        self.paused_at = None
        until = self.clock() + FLOOR_TTL_S
        for key, seq in floors.items():
            self.floors[key] = (seq, until)
        items = list(self.ready)
        before, after = items[:at], items[at:]
        if floors:
            before = [i for i in before if not _covered_by(i, floors)]
            after = [i for i in after if not _covered_by(i, floors)]
            for key in [k for k, i in self.held.items() if _covered_by(i, floors)]:
                del self.held[key]
        self.ready = deque([*before, *((text, None, None) for text in snapshots), *after])
        self.on_ready()

    # -- the writer -------------------------------------------------------------------------------
    def pop(self) -> str | None:
        """The next frame to send now, or None (then wait for on_ready or `next_due()`)."""
        if self.paused_at is not None:
            return None
        if self.held and len(self.ready) < self.limit:
            self._release(self.clock())
        if not self.ready:
            self.congested_since = None
            return None
        text = self.ready.popleft()[0]
        if self.congested_since is not None and len(self.ready) < self.limit // 2 and not self.held:
            self.congested_since = None
        return text

    def next_due(self) -> float | None:
        """When the earliest held frame may be sent (clock time), or None if nothing is held."""
        if not self.held:
            return None
        return min(self.next_at.get(key, 0.0) for key in self.held)

    def too_slow(self, now: float) -> bool:
        """The queue has been full for slow_after_s, or events alone overflow twice the limit."""
        if len(self.ready) >= 2 * self.limit:
            return True
        return self.congested_since is not None and now - self.congested_since >= self.slow_after_s

    # -- internals --------------------------------------------------------------------------------
    def _congested(self, now: float) -> None:
        if self.congested_since is None:
            self.congested_since = now

    def _covered(self, key: str, seq: int | None, now: float) -> bool:
        floor = self.floors.get(key)
        if floor is None:
            return False
        if now > floor[1] or seq is None or seq > floor[0]:
            del self.floors[key]
            return False
        return True

    def _release(self, now: float) -> None:
        for key, item in list(self.held.items()):
            if len(self.ready) >= self.limit:
                self._congested(now)
                return
            if self.next_at.get(key, 0.0) <= now:
                del self.held[key]
                self.ready.append(item)
                if self.interval:
                    self.next_at[key] = now + self.interval


def _covered_by(item: Item, floors: dict[str, int]) -> bool:
    _, key, seq = item
    return key is not None and key in floors and (seq or 0) <= floors[key]
