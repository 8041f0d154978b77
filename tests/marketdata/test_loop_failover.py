import asyncio
import contextlib
import json

import pytest
from asgiref.sync import sync_to_async

from kernel.redis import key, sync_client
from marketdata.loop import HEALTH_KEY, VENUES_KEY, MarketLoop
from marketdata.models import Venue
from marketdata.quotes import SelectedQuote
from tests.support.instruments import make_instrument
from tests.support.waiting import await_until

from .conftest import simulator_venue


@pytest.mark.django_db(transaction=True)
async def test_the_running_loop_fails_over_when_the_selected_venue_is_disabled_in_the_database(
    tick_table, thread_db_closed
):
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim-a", priority=1, symbols=[eurusd])
    await sync_to_async(simulator_venue)("sim-b", priority=5, symbols=[eurusd])
    seen: list[SelectedQuote] = []
    loop = MarketLoop(reload_interval_s=0.5, extra_outputs=[seen.append])
    task = asyncio.create_task(loop.run())

    def last_venue() -> str | None:
        return seen[-1].quote.venue if seen and seen[-1].quote else None

    try:
        await await_until(lambda: last_venue() == "sim-a" and len(loop.manager.feeds.get("EURUSD", {})) == 2)
        await asyncio.sleep(1.2)  # let the health export run with both feeds
        health = json.loads(sync_client().get(key(HEALTH_KEY)))
        assert {(r["venue"], r["state"]) for r in health} == {("sim-a", "selected"), ("sim-b", "healthy")}
        venues = json.loads(sync_client().get(key(VENUES_KEY)))
        assert [(v["venue"], v["kind"], v["state"], v["connects"], v["reconnects"]) for v in venues] == [
            ("sim-a", "simulator", "streaming", 1, 0),
            ("sim-b", "simulator", "streaming", 1, 0),
        ]

        await sync_to_async(Venue.objects.filter(code="sim-a").update)(enabled=False)
        took = await await_until(lambda: last_venue() == "sim-b", timeout_s=5)
        assert took <= 0.5 + 1.0  # one reload period, well inside stale_after_ms + 1 s
        assert seen[-1].tradable
        assert "sim-a" not in loop.adapters  # its adapter was stopped
        count = len(seen)
        await asyncio.sleep(0.3)
        assert all(s.quote is not None and s.quote.venue == "sim-b" for s in seen[count:])

        await sync_to_async(Venue.objects.filter(code="sim-a").update)(enabled=True)
        await await_until(lambda: last_venue() == "sim-a", timeout_s=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert loop.recorder.written > 0 and loop.recorder.buffered == 0
