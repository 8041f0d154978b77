"""The one line per metric that `make bench` reads: {"name", "value", "unit", "target"}, with the
machine's CPU model and count beside every figure, and the machine's own yardstick (PostgreSQL's
transaction rate under pgbench) that the dealing figures are also given as a ratio of."""

import json
import operator
import os
import re
import subprocess
import sys
import time
from functools import cache

_TARGET = re.compile(r"^(<=|>=)\s*([0-9.]+)$")
_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
# The environment variable through which `make bench` hands its one pgbench figure to every script.
PGBENCH_TPS_ENV = "BENCH_PG_SIMPLE_UPDATE_TPS"
PGBENCH_CLIENTS, PGBENCH_SECONDS = 2, 10


@cache
def cpu() -> tuple[str, int]:
    """(model name, logical CPUs) of this machine, as /proc/cpuinfo and the scheduler see them."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return model, len(os.sched_getaffinity(0))


def emit(name: str, value: float, unit: str, target: str) -> None:
    """`target` is a comparison with the value on its left, e.g. "<= 25" or ">= 20000"."""
    if not _TARGET.match(target):
        raise ValueError(f"target {target!r} must look like '<= 25' or '>= 20000'")
    model, count = cpu()
    line = {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "target": target,
        "cpu": model,
        "cpus": count,
    }
    print(json.dumps(line), flush=True)


def met(value: float, target: str) -> bool:
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"target {target!r} must look like '<= 25' or '>= 20000'")
    compare = operator.le if match.group(1) == "<=" else operator.ge
    return bool(compare(value, float(match.group(2))))


def _pg_run(*args: str) -> str:
    """Run a PostgreSQL client program against the server Django's settings name; its stdout."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "PGHOST": db.get("HOST") or "127.0.0.1",
        "PGPORT": str(db.get("PORT") or 5432),
        "PGUSER": db.get("USER") or "postgres",
    }
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    return subprocess.run(args, env=env, check=True, capture_output=True, text=True, timeout=300).stdout


def pgbench_tps(database: str, *args: str) -> float:
    """pgbench's transactions per second for `args` (a script and its clients and duration) on `database`."""
    out = _pg_run("pgbench", "-n", *args, database)
    match = _TPS.search(out)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps line:\n{out}")
    return float(match.group(1))


def pgbench_simple_update_tps() -> float:
    """PostgreSQL's own rate for pgbench's built-in simple-update script (2 clients, 10 s) on a scratch
    database that is created and dropped here, on the server Django's settings name: the yardstick the
    dealing benchmarks are read against."""
    scratch = f"livermore_pgbench_{os.getpid()}"
    _pg_run("psql", "-qd", "postgres", "-c", f'CREATE DATABASE "{scratch}"')
    try:
        _pg_run("pgbench", "-i", "-q", "-s", "1", scratch)
        clients = str(PGBENCH_CLIENTS)
        return pgbench_tps(
            scratch, "-b", "simple-update", "-c", clients, "-j", clients, "-T", str(PGBENCH_SECONDS)
        )
    finally:
        _pg_run("psql", "-qd", "postgres", "-c", f'DROP DATABASE IF EXISTS "{scratch}"')


def pgbench_tps_for_ratio() -> float:
    """The run's pgbench figure when `make bench` measured it, else measured now (a script run alone)."""
    given = os.environ.get(PGBENCH_TPS_ENV)
    return float(given) if given else pgbench_simple_update_tps()


# pgbench simple-update, 2 clients, on a quiet 2-core AMD EPYC of this project's machine kind.
REFERENCE_PG_TPS = 2900.0


def emit_vs_pgbench(name: str, value: float, bar: float, tps: float) -> None:
    """`value` as a ratio of this machine's pgbench rate. Its target is the absolute `bar` met on a
    machine whose pgbench rate is half the reference one's, so the bar holds with margin wherever the
    ratio target is met."""
    emit(name, value / tps, "ratio", f">= {bar / (REFERENCE_PG_TPS / 2):.3f}")


def _cpu_idle_share(interval_s: float) -> float:
    """The share of all CPUs' time spent idle (or waiting for I/O) over the next `interval_s`."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle0, total0 = sample()
    time.sleep(interval_s)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(total1 - total0, 1)


def settle(max_wait_s: float = 30.0, idle_share: float = 0.9) -> None:
    """Let the machine go quiet before a measurement, so one figure does not carry the cost of the step
    before it: PostgreSQL writes out what earlier steps dirtied (a CHECKPOINT, so that flush does not land
    in the measured window), then wait until the CPUs have been at least `idle_share` idle over a second
    (the last step's processes gone, a server's other processes done starting), at most `max_wait_s`."""
    import psycopg

    from kernel.db import database_conninfo

    try:
        with psycopg.connect(database_conninfo(dbname="postgres"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        sys.stderr.write("settle: no CHECKPOINT (needs the pg_checkpoint role)\n")
    deadline = time.monotonic() + max_wait_s
    while _cpu_idle_share(1.0) < idle_share and time.monotonic() < deadline:
        pass
