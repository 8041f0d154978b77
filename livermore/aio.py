"""asyncio helpers shared by the long-running processes."""

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel `task` and wait until it has ended.

    `with suppress(CancelledError): await task` would also swallow a cancellation of the CALLER
    that arrives while it waits, and the caller would run on after being told to stop (a TaskGroup
    waiting for it then never ends). Here the caller's own cancellation propagates.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def cancel_all(tasks: Iterable[asyncio.Task[object]], *, again_after_s: float = 0.5) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again whichever is still
    running every `again_after_s`: a library that swallows one cancellation (asyncio.wait_for in
    Python 3.11 does when its future completes at that moment) must not keep a process from stopping.
    The tasks' own exceptions are left to their owner."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
