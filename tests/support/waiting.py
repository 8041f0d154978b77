"""Polling waits for tests that watch another thread, task or process make progress."""

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05, what: str = "condition"
) -> T:
    """Wait for `predicate` to return something true; returns it."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(interval_s)
    return value


async def await_until(predicate: Callable[[], object], timeout_s: float = 10.0) -> float:
    """Wait for `predicate`; returns how long it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started
