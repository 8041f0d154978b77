"""A system event listener for tests (settings.SYSTEM_EVENT_LISTENERS): keeps what it is given."""

from kernel.sysevents import SystemEvent

RECEIVED: list[SystemEvent] = []


def record(event: SystemEvent) -> None:
    RECEIVED.append(event)


def fail(event: SystemEvent) -> None:
    raise RuntimeError("listener down")
