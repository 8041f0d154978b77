"""The per-connection outbound queue: conflation, bounds, snapshot hand-over, slow-consumer timing."""

from marketdata.outbox import Outbox


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outbox(clock: Clock, *, limit: int = 10, max_rate: float | None = 10, slow_after_s: float = 5) -> Outbox:
    return Outbox(limit=limit, max_rate=max_rate, slow_after_s=slow_after_s, clock=clock)


def drain(box: Outbox) -> list[str]:
    out = []
    while (text := box.pop()) is not None:
        out.append(text)
    return out


def test_it_sends_the_first_update_at_once_and_only_the_latest_after_the_rate_slot():
    clock = Clock()
    box = outbox(clock)
    for seq in range(1, 6):
        box.offer(f"EURUSD-{seq}", "EURUSD", seq)
    assert drain(box) == ["EURUSD-1"]
    assert box.next_due() == 100.1
    clock.now = 100.1
    assert drain(box) == ["EURUSD-5"]
    assert box.conflated == 3


def test_the_rate_limit_is_per_symbol():
    clock = Clock()
    box = outbox(clock)
    box.offer("EURUSD-1", "EURUSD", 1)
    box.offer("GBPUSD-1", "GBPUSD", 1)
    box.offer("EURUSD-2", "EURUSD", 2)
    assert drain(box) == ["EURUSD-1", "GBPUSD-1"]


def test_without_conflation_every_update_goes_out_in_order():
    box = outbox(Clock(), max_rate=None)
    for seq in range(1, 6):
        box.offer(f"EURUSD-{seq}", "EURUSD", seq)
    assert drain(box) == [f"EURUSD-{seq}" for seq in range(1, 6)]


def test_a_full_queue_conflates_updates_even_without_rate_limit_and_keeps_events():
    clock = Clock()
    box = outbox(clock, limit=3, max_rate=None)
    for seq in range(1, 10):
        box.offer(f"EURUSD-{seq}", "EURUSD", seq)
    box.offer("alert")
    assert len(box.ready) == 4  # events are never dropped
    assert box.congested_since == 100.0
    assert drain(box) == ["EURUSD-1", "EURUSD-2", "EURUSD-3", "alert", "EURUSD-9"]
    assert box.congested_since is None


def test_it_is_too_slow_only_after_staying_congested_for_the_grace_period():
    clock = Clock()
    box = outbox(clock, limit=2, max_rate=None, slow_after_s=5)
    for seq in range(1, 5):
        box.offer(f"q{seq}", "EURUSD", seq)
    clock.now = 104.9
    assert not box.too_slow(clock.now)
    clock.now = 105.0
    assert box.too_slow(clock.now)


def test_events_overflowing_twice_the_limit_are_too_slow_at_once():
    clock = Clock()
    box = outbox(clock, limit=2)
    for i in range(4):
        box.offer(f"event-{i}")
    assert box.too_slow(clock.now)


def test_a_paused_outbox_sends_nothing_then_puts_the_snapshot_before_newer_updates():
    clock = Clock()
    box = outbox(clock, max_rate=None)
    box.offer("pong")
    box.pause()
    box.offer("EURUSD-7", "EURUSD", 7)
    box.offer("EURUSD-8", "EURUSD", 8)
    assert box.pop() is None
    box.resume(["snapshot"], {"EURUSD": 7})
    assert drain(box) == ["pong", "snapshot", "EURUSD-8"]


def test_updates_the_snapshot_covers_are_dropped_even_when_they_arrive_late():
    clock = Clock()
    box = outbox(clock, max_rate=None)
    box.pause()
    box.resume(["snapshot"], {"EURUSD": 7})
    box.offer("EURUSD-6", "EURUSD", 6)
    box.offer("EURUSD-7", "EURUSD", 7)
    box.offer("EURUSD-8", "EURUSD", 8)
    box.offer("EURUSD-1", "EURUSD", 1)  # the market loop restarted: seq starts again
    assert drain(box) == ["snapshot", "EURUSD-8", "EURUSD-1"]
