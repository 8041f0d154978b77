"""A market leader that stops at second 57 of a minute, killed (SIGKILL) or stopped (SIGTERM), and
a standby that takes over in the next minute, on the real processes and a private redis-server:
every minute with stored ticks has its stored bar, every stored bar (1m, and 5m, 15m, 1h when one
closed meanwhile) counts every stored tick of its period, and no (symbol, seq) is stored twice or
numbered backwards."""

import time
from datetime import datetime
from pathlib import Path

import pytest
from django.db import connection

from marketdata.demo import demo_seed
from tests.faults.processes import Market, duplicate_seqs, lease_holder, market_env, start_leader, start_pair
from tests.support.servers import private_redis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A lease renewed every third of it: a holder killed at second 57 loses it at 57 + 6 * 2/3 = 61 at
# the earliest, so the standby takes over in the next minute.
TTL_S = 6.0


def sleep_until_second(second: float) -> int:
    """Sleep until `second` of the current minute (of the next, if less than 2 s away); returns the
    minute's start (epoch s)."""
    now = time.time()
    minute = int(now - now % 60)
    if minute + second < now + 2:
        minute += 60
    time.sleep(minute + second - now)
    return minute


def minutes_without_their_bar(before: int) -> list[tuple[str, datetime, int, int | None]]:
    """(symbol, minute, stored ticks, the stored 1m bar's tick count) of every minute before
    `before` (epoch s) whose bar is missing or does not count its ticks."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.symbol, t.minute, t.n, c.tick_count FROM ("
            "  SELECT symbol, date_trunc('minute', ts) AS minute, count(*) AS n FROM marketdata_tick"
            "  WHERE ts < to_timestamp(%s) GROUP BY 1, 2"
            ") t LEFT JOIN ("
            "  SELECT i.symbol, c.start, c.tick_count FROM marketdata_candle c"
            "  JOIN marketdata_instrument i ON i.id = c.instrument_id WHERE c.timeframe = '1m'"
            ") c ON c.symbol = t.symbol AND c.start = t.minute "
            "WHERE c.tick_count IS DISTINCT FROM t.n ORDER BY 1, 2",
            [before],
        )
        return cursor.fetchall()


def bars_missing_ticks() -> list[tuple[str, str, datetime, int, int]]:
    """(symbol, timeframe, start, tick count, stored ticks) of every stored bar whose tick count is
    not the number of ticks stored in its period."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.symbol, c.timeframe, c.start, c.tick_count, ("
            "  SELECT count(*) FROM marketdata_tick t WHERE t.symbol = i.symbol AND t.ts >= c.start"
            "  AND t.ts < c.start + CASE c.timeframe WHEN '1m' THEN interval '1 minute'"
            "  WHEN '5m' THEN interval '5 minutes' WHEN '15m' THEN interval '15 minutes'"
            "  WHEN '1h' THEN interval '1 hour' WHEN '4h' THEN interval '4 hours' ELSE interval '1 day' END"
            ") AS n FROM marketdata_candle c JOIN marketdata_instrument i ON i.id = c.instrument_id"
        )
        return [row for row in cursor.fetchall() if row[3] != row[4]]


def seqs_backwards() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY symbol ORDER BY ts, seq) AS prev "
            "FROM marketdata_tick) s WHERE seq <= prev"
        )
        return int(cursor.fetchone()[0])


def bar_stored(minute: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM marketdata_candle WHERE timeframe = '1m' AND start = to_timestamp(%s)", [minute]
        )
        return cursor.fetchone() is not None


def check(stopped_minute: int, last_minute: int, how: str, takeover_s: float) -> None:
    holes = minutes_without_their_bar(last_minute)
    short = bars_missing_ticks()
    with connection.cursor() as cursor:
        cursor.execute("SELECT timeframe, count(*) FROM marketdata_candle GROUP BY 1 ORDER BY 1")
        bars = dict(cursor.fetchall())
    print(
        f"{how} at second 57: the standby led {takeover_s:.1f}s after; bars stored {bars}; minutes "
        f"without their bar {len(holes)}; bars missing ticks {len(short)}; duplicate seqs "
        f"{duplicate_seqs()}; seqs backwards {seqs_backwards()}"
    )
    assert holes == []
    assert short == []
    assert bar_stored(stopped_minute)
    assert duplicate_seqs() == 0
    assert seqs_backwards() == 0


def test_a_leader_killed_at_second_57_leaves_no_minute_without_its_bar(
    tmp_path: Path, tick_table: None
) -> None:
    demo_seed()
    with private_redis(tmp_path) as server:
        leader, standby, prefix = start_pair(tmp_path, server, TTL_S)
        try:
            minute = sleep_until_second(57)
            leader.process.kill()
            killed = time.time()
            wait_until(lambda: f":{standby.process.pid}:" in lease_holder(server, prefix), timeout_s=15)
            took_over = time.time()
            wait_until(lambda: bar_stored(minute), timeout_s=15)
            last_minute = int(time.time() // 60 * 60)
            assert standby.stop() == 0, standby.output()[-3000:]
        finally:
            leader.stop()
            standby.stop()
    assert took_over >= minute + 60, "the standby took over in the same minute"
    check(minute, last_minute, "SIGKILL", took_over - killed)


def test_a_leader_stopped_at_second_57_leaves_no_minute_without_its_bar(
    tmp_path: Path, tick_table: None
) -> None:
    demo_seed()
    with private_redis(tmp_path) as server:
        env = market_env(server, TTL_S)
        leader = start_leader(tmp_path, server, env)
        following: Market | None = None
        try:
            minute = sleep_until_second(57)
            stopped = time.time()
            assert leader.stop() == 0, leader.output()[-3000:]
            time.sleep(max(minute + 60.5 - time.time(), 0))
            following = start_leader(tmp_path, server, env, "following")
            took_over = time.time()
            wait_until(lambda: bar_stored(minute), timeout_s=15)
            last_minute = int(time.time() // 60 * 60)
            assert following.stop() == 0, following.output()[-3000:]
        finally:
            leader.stop()
            if following is not None:
                following.stop()
    check(minute, last_minute, "SIGTERM", took_over - stopped)
