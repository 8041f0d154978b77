"""asyncio helpers shared by the long-running processes."""

import asyncio


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
