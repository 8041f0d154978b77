"""The machine's own yardstick, measured first by `make bench` in the same run: PostgreSQL's
transaction rate under pgbench's built-in simple-update script (2 clients, fixed duration, on a
scratch database), printed as pg_simple_update_tps beside the CPU model. The dealing benchmarks also
print their figures as a ratio of it, so a slower disk or CPU shows in the yardstick too.

Its target is a floor below which the machine itself is too slow for the dealing bars to mean much.

It also prints what one round trip to PostgreSQL (`SELECT 1` on an open connection) takes back to back
(pg_round_trip_us) and after the process has slept 50 ms (pg_idle_round_trip_us), medians of
ROUND_TRIPS each. On a virtual machine an idle vCPU halts, and waking the server and then the client
costs far more than the round trip itself: on a 2-CPU Xeon VM 20 us back to back, 300-470 us after
idling. A request crosses processes and threads a dozen times (an API order: Redis for the key and
throttles, Redis for the data versions, five PostgreSQL round trips, the thread hand-overs), so at a
light load that wake-up, not CPU, sets most of its latency: there the order API answered sequential
orders in 5.6 ms back to back and 9.4-11 ms 50 ms apart."""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit, pgbench_simple_update_tps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")

import django

django.setup()


ROUND_TRIPS = 200
IDLE_S = 0.05


def round_trip_us(idle_s: float) -> float:
    """The median time of `SELECT 1` on an open connection, each after `idle_s` of sleep."""
    import psycopg
    from django.db import connection

    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as conn:
        took = []
        for _ in range(ROUND_TRIPS):
            if idle_s:
                time.sleep(idle_s)
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            took.append((time.perf_counter() - started) * 1e6)
    return statistics.median(took)


def main() -> None:
    emit("pg_simple_update_tps", pgbench_simple_update_tps(), "tps", ">= 1000")
    emit("pg_round_trip_us", round_trip_us(0), "us", "<= 200")
    emit("pg_idle_round_trip_us", round_trip_us(IDLE_S), "us", "<= 1000")


if __name__ == "__main__":
    main()
