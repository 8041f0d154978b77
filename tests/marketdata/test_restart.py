"""The market process restarts without losing what it had: open bars, unstored bars, seq numbers."""

import asyncio
import contextlib
import threading
from datetime import UTC, datetime
from decimal import Decimal as D

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from alerts.listeners import on_quote as live_alerts
from brokerage.watcher import quote_listener as trigger_watcher
from kernel.db import database_conninfo
from kernel.redis import key, sync_client
from marketdata.adapters import ADAPTERS
from marketdata.bars import Bar
from marketdata.loop import SEQ_KEY, MarketLoop
from marketdata.models import Candle
from marketdata.outputs import CandleStage
from marketdata.publisher import ticker_key
from marketdata.quotes import Quote, SelectedQuote, now_ns
from marketdata.services import candles_store
from marketdata.ticks import TickRecorder
from tests.support.instruments import make_instrument
from tests.support.stack import free_port
from tests.support.waiting import await_until

from .conftest import simulator_venue

pytestmark = pytest.mark.django_db(transaction=True)

NS = 1_000_000_000


def quote(ts: int, mid: str, seq: int = 1) -> SelectedQuote:
    m = D(mid)
    q = Quote("EURUSD", "sim", m - D("0.0001"), m + D("0.0001"), venue_ts=ts, recv_ts=ts)
    return SelectedQuote(symbol="EURUSD", seq=seq, quote=q, tradable=True)


def stored(timeframe: str, start: int) -> Candle:
    return Candle.objects.get(timeframe=timeframe, start=datetime.fromtimestamp(start, UTC))


async def test_bars_closed_after_a_restart_keep_the_open_high_low_and_ticks_of_before(
    tick_table, thread_db_closed
):
    await sync_to_async(make_instrument)("EURUSD")
    period = (now_ns() // NS - 3600) // 300 * 300  # a 5m bar an hour ago, restarted in its 4th minute
    bars = [
        Bar("EURUSD", "1m", period, D("1.1000"), D("1.1050"), D("1.0990"), D("1.1010"), tick_count=10),
        Bar("EURUSD", "1m", period + 60, D("1.1010"), D("1.1020"), D("1.0950"), D("1.1000"), tick_count=5),
        Bar("EURUSD", "1m", period + 120, D("1.1000"), D("1.1030"), D("1.1000"), D("1.1020"), tick_count=7),
    ]
    await sync_to_async(candles_store)(bars=bars)
    recorder = TickRecorder(database_conninfo())
    recorder(quote((period + 185) * NS, "1.1022", 1))  # the previous run's last ticks, this minute
    recorder(quote((period + 190) * NS, "1.1060", 2))
    assert await asyncio.to_thread(recorder.flush)
    restart = (period + 200) * NS

    stage = CandleStage()
    try:
        await stage.restore(["EURUSD"], restart)
        stage(quote((period + 230) * NS, "1.1040"))
        stage(quote((period + 301) * NS, "1.1000"))  # closes the 4th minute and the 5m bar
        await stage.flush()
    finally:
        stage.close()

    minute = await sync_to_async(stored)("1m", period + 180)
    assert (minute.open, minute.high, minute.low, minute.close, minute.tick_count) == (
        D("1.1022"),
        D("1.1060"),
        D("1.1022"),
        D("1.1040"),
        3,
    )
    five = await sync_to_async(stored)("5m", period)
    assert (five.open, five.high, five.low, five.close, five.tick_count) == (
        D("1.1000"),
        D("1.1060"),
        D("1.0950"),
        D("1.1040"),
        25,
    )
    assert five.partial and minute.partial and five.source == "mid"


async def test_bars_the_database_refused_at_shutdown_are_stored_by_the_next_run(thread_db_closed):
    await sync_to_async(make_instrument)("EURUSD")
    name = connection.settings_dict["NAME"]
    start = (now_ns() // NS - 600) // 300 * 300  # so only the 1m bar closes, not a longer one
    stage = CandleStage()
    stage(quote(start * NS, "1.2000"))
    stage(quote((start + 30) * NS, "1.2100"))
    stage(quote((start + 60) * NS, "1.1900"))  # closes the first minute

    def set_connections(allow: str) -> None:
        with psycopg.connect(database_conninfo(dbname="postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {allow}')

    set_connections("false")  # the candle thread has no connection yet: it cannot get one
    try:
        await stage.shutdown(timeout_s=0.5)
    finally:
        set_connections("true")
        stage.close()
    assert await sync_to_async(Candle.objects.count)() == 0
    assert sync_client().llen(key("candles-unstored")) == 1

    following = CandleStage()
    try:
        await following.restore(["EURUSD"], now_ns())
    finally:
        following.close()
    candle = await sync_to_async(stored)("1m", start)
    assert (candle.open, candle.high, candle.low, candle.close, candle.tick_count) == (
        D("1.2000"),
        D("1.2100"),
        D("1.2000"),
        D("1.2100"),
        2,
    )
    assert sync_client().llen(key("candles-unstored")) == 0


def duplicate_seqs() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM marketdata_tick GROUP BY symbol, seq HAVING count(*) > 1) d"
        )
        return int(cursor.fetchone()[0])


async def run_until_quoted(loop: MarketLoop, seen: list[SelectedQuote], count: int) -> None:
    task = asyncio.create_task(loop.run())
    try:
        await await_until(lambda: len(seen) >= count)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_open_bars_are_rebuilt_from_the_database_when_redis_is_down_at_start(
    tick_table, thread_db_closed, settings
):
    await sync_to_async(make_instrument)("EURUSD")
    minute = now_ns() // NS // 60 * 60
    recorder = TickRecorder(database_conninfo())
    recorder(quote(minute * NS, "1.1022", 1))  # the previous run's ticks of this minute
    recorder(quote(minute * NS + 1, "1.1060", 2))
    assert await asyncio.to_thread(recorder.flush)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # refuses connections

    stage = CandleStage()
    try:
        await stage.restore(["EURUSD"], now_ns())
    finally:
        stage.close()
    bar = stage.builder.symbols["EURUSD"].minute
    assert bar is not None and bar.start == minute * NS
    assert (bar.open, bar.high, bar.ticks) == (D("1.1022"), D("1.1060"), 2)


async def test_seq_numbers_continue_across_restarts(tick_table, thread_db_closed):
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim", priority=1, symbols=[eurusd])
    runs: list[list[SelectedQuote]] = [[], [], []]
    await run_until_quoted(MarketLoop(extra_outputs=[runs[0].append]), runs[0], 5)
    sync_client().delete(key(SEQ_KEY))  # a crash: only the ticker cache knows the last seq
    await run_until_quoted(MarketLoop(extra_outputs=[runs[1].append]), runs[1], 5)
    sync_client().delete(ticker_key("EURUSD"))  # down longer than the ticker cache's TTL
    await run_until_quoted(MarketLoop(extra_outputs=[runs[2].append]), runs[2], 5)
    seqs = [s.seq for run in runs for s in run]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert runs[1][0].seq == runs[0][-1].seq + 1


async def test_seq_numbers_continue_from_the_stored_ticks_when_redis_came_back_empty(
    tick_table, thread_db_closed
):
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim", priority=1, symbols=[eurusd])
    first: list[SelectedQuote] = []
    await run_until_quoted(MarketLoop(extra_outputs=[first.append]), first, 5)  # its ticks flushed at stop
    redis = sync_client()
    redis.delete(*redis.scan_iter(f"{settings.REDIS_PREFIX}:*"))  # a Redis restart without persistence
    second: list[SelectedQuote] = []
    await run_until_quoted(MarketLoop(extra_outputs=[second.append]), second, 5)
    stored_last = max(s.seq for s in first if s.quote is not None and s.tradable)
    assert second[0].seq == max(s.seq for s in first) + 1 and second[0].seq > stored_last
    assert await sync_to_async(duplicate_seqs)() == 0


async def test_a_quote_stamped_in_the_future_is_refused_and_bars_go_on(settings, thread_db_closed):
    settings.QUOTE_MAX_FUTURE_S = 60
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim", priority=1, symbols=[eurusd])
    seen: list[SelectedQuote] = []
    loop = MarketLoop(extra_outputs=[seen.append])
    await loop.reload()
    try:
        adapter = loop.adapters["sim"][1]
        await await_until(lambda: len(seen) >= 2)
        now = now_ns()
        bad = Quote("EURUSD", "sim", D("1.1"), D("1.1002"), venue_ts=now + 3600 * NS, recv_ts=now)
        loop.on_quote(bad)
        assert adapter.stats.malformed == 1
        assert all(s.quote is not bad for s in seen)
        count = len(seen)
        await await_until(lambda: len(seen) >= count + 2)  # later quotes still flow
        assert loop.candles.builder.late == 0
        minute = loop.candles.builder.symbols["EURUSD"].minute
        assert minute is not None and minute.start <= now_ns() < minute.end + NS
    finally:
        for _, _, task in loop.adapters.values():
            task.cancel()
        loop.candles.close()


async def test_a_venue_without_an_adapter_does_not_stop_the_others(caplog, thread_db_closed, monkeypatch):
    monkeypatch.delitem(ADAPTERS, "fix")  # a build without the FIX adapter
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim", priority=2, symbols=[eurusd])
    broken = await sync_to_async(simulator_venue)("lp-fix", priority=1, symbols=[eurusd])
    broken.kind = "fix"  # a kind whose adapter this build does not have
    await sync_to_async(broken.save)()
    loop = MarketLoop()
    try:
        await loop.reload()
        await loop.reload()
        assert set(loop.adapters) == {"sim"}
        assert caplog.text.count("venue=lp-fix not started") == 1  # logged once, not every reload
    finally:
        for _, _, task in loop.adapters.values():
            task.cancel()
        loop.candles.close()


async def test_the_loop_stops_its_quote_listeners_and_the_next_run_starts_them_again(
    tick_table, thread_db_closed
):
    eurusd = await sync_to_async(make_instrument)("EURUSD")
    await sync_to_async(simulator_venue)("sim", priority=1, symbols=[eurusd])
    for _ in range(2):
        task = asyncio.create_task(MarketLoop().run())
        try:
            await await_until(lambda: trigger_watcher.started and trigger_watcher.ready.is_set())
            assert live_alerts._executor is not None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not trigger_watcher.started and live_alerts._executor is None
        left = [t.name for t in threading.enumerate() if t.name.startswith(("triggers", "alerts-live"))]
        assert left == []
