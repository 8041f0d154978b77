import asyncio

import pytest

from kernel.aio import cancel_and_wait


async def test_cancel_and_wait_ends_the_task():
    started = asyncio.Event()

    async def forever():
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_cancellation_of_the_caller_while_it_waits_is_not_swallowed():
    """The bug it exists for: a reload job waiting for an adapter to stop kept running after
    its own TaskGroup cancelled it, and the market loop never shut down."""
    inner_started = asyncio.Event()
    release = asyncio.Event()

    async def slow_to_stop():
        inner_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # still unwinding when the caller is cancelled
            raise

    async def caller():
        task = asyncio.create_task(slow_to_stop())
        await inner_started.wait()
        await cancel_and_wait(task)
        return "ran on"

    outer = asyncio.create_task(caller())
    await inner_started.wait()
    await asyncio.sleep(0)  # the caller is now waiting inside cancel_and_wait
    outer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()


async def test_cancel_and_wait_ends_a_task_that_swallows_one_cancellation():
    swallowed = asyncio.Event()

    async def stubborn():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # as a library bug would: carry on
        await asyncio.sleep(3600)

    async def polite():
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(polite())]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(*tasks, again_after_s=0.05), timeout=5)
    assert swallowed.is_set()
    assert all(t.cancelled() for t in tasks)
