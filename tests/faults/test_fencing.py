"""Fencing: each lease acquisition gets a number above every earlier one, durable across a Redis
restart, and the writes of a holder whose number a newer acquisition superseded are refused by
PostgreSQL (ticks, bars) and by Redis (the quote publisher's cache and frames)."""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from django.db import connection

from kernel.db import database_conninfo
from kernel.lease import Lease, StaleFence, fence_check, fence_record
from kernel.redis import get, key, sync_client
from marketdata import ticks
from marketdata.bars import Bar
from marketdata.publisher import QuotePublisher, ticker_key
from marketdata.quotes import Quote, SelectedQuote
from marketdata.services import candles_store
from marketdata.ticks import TickRecorder
from tests.support.instruments import make_instrument
from tests.support.servers import PrivateRedis

pytestmark = pytest.mark.django_db(transaction=True)


def selected(seq: int, symbol: str = "EURUSD") -> SelectedQuote:
    ts = time.time_ns()
    bid = D("1.08500") + D(seq) / 100000
    q = Quote(symbol, "sim", bid, bid + D("0.00012"), venue_ts=ts, recv_ts=ts)
    return SelectedQuote(symbol=symbol, seq=seq, quote=q, tradable=True)


def stored_seqs() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq FROM marketdata_tick ORDER BY seq")
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[tuple[PrivateRedis, aioredis.Redis]]:
    server = PrivateRedis(tmp_path)
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    yield server, client
    await client.aclose()
    server.kill()


async def test_each_acquisition_gets_a_higher_fence_even_after_redis_restarted_empty(private):
    server, client = private
    fences = []
    for _ in range(2):
        lease = Lease(client, "market", ttl_s=2, record=fence_record)
        await lease.acquire()
        fences.append(lease.fence)
        await lease.release()
    server.kill()
    await asyncio.to_thread(server.start)  # empty: its INCR starts again from 1
    lease = Lease(client, "market", ttl_s=2, record=fence_record)
    await lease.acquire()
    fences.append(lease.fence)
    assert fences[0] < fences[1] < fences[2]
    assert int(await client.get(lease.fence_key)) == fences[2]  # the publisher's script compares to it
    await lease.release()


def test_a_superseded_recorder_writes_no_tick(tick_table: None) -> None:
    fence_record("market", 1)
    old = TickRecorder(database_conninfo(), fence=("market", 1))
    old(selected(1))
    assert old.flush()
    fence_record("market", 2)  # a standby took over while the old leader held its next batch
    old(selected(2))
    new = TickRecorder(database_conninfo(), fence=("market", 2))
    new(selected(2))
    assert old.flush() and new.flush()
    old._close()
    new._close()
    assert stored_seqs() == [1, 2]
    assert (old.fenced, old.written, new.written) == (1, 1, 1)


def test_a_new_fence_waits_for_a_write_in_flight_under_the_old_one(tick_table: None) -> None:
    fence_record("market", 1)
    with connection.cursor() as cursor:
        if ticks.is_partitioned(cursor):
            ticks.partitions_ensure(cursor, [datetime.now(UTC).date()])
    with psycopg.connect(database_conninfo()) as writer:
        in_flight = writer.cursor()
        in_flight.execute(
            "INSERT INTO marketdata_tick (ts, symbol, venue, bid, ask, seq) "
            "VALUES (now(), 'EURUSD', 'sim', 1, 1, 7)"
        )
        assert fence_check(in_flight, "market", 1)
        recorded: list[int] = []
        newer = threading.Thread(target=lambda: recorded.append(fence_record("market", 2)))
        newer.start()
        time.sleep(0.5)
        assert not recorded  # blocked by the write in flight
        writer.commit()
        newer.join(5)
    assert recorded == [2]
    assert stored_seqs() == [7]  # the new leader numbers after it


def test_a_superseded_candle_store_stores_nothing() -> None:
    make_instrument("EURUSD")
    bar = Bar(
        "EURUSD", "1m", int(datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp()), D(1), D(2), D(1), D(2)
    )
    fence_record("market", 1)
    fence_record("market", 2)
    with pytest.raises(StaleFence):
        candles_store(bars=[bar], fence=("market", 1))
    assert candles_store(bars=[bar], fence=("market", 2)) == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM marketdata_candle")
        assert cursor.fetchone()[0] == 1


async def test_a_superseded_publisher_caches_and_sends_nothing() -> None:
    pubsub = sync_client().pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(key("ch*"))
    sync_client().set(key("fence", "market"), 5)
    old, new = QuotePublisher(fence=("market", 4)), QuotePublisher(fence=("market", 5))
    assert not await old.flush([selected(1)])
    assert await new.flush([selected(2)])
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            frames.append(message)
    pubsub.close()
    assert len(frames) == 1  # the new leader's batch only
    assert json.loads(get(ticker_key("EURUSD")) or b"{}")["seq"] == 2
