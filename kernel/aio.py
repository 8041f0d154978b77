"""asyncio helpers shared by the long-running processes."""

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task[object], again_after_s: float = 0.5) -> None:
    """Cancel `tasks` and wait until every one has ended.

    Whichever is still running is cancelled again every `again_after_s`: a library that swallows one
    cancellation (asyncio.wait_for in Python 3.11 does when its future completes at that moment) must
    not keep a process from stopping. A cancellation of the CALLER while it waits propagates, which
    `with suppress(CancelledError): await task` would swallow (and the caller would run on after
    being told to stop). The tasks' own exceptions are left to their owner.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
