"""Market orders through the HTTP API, served as `make run` serves it.

Sets up its own database and Redis prefix (dropped afterwards), starts the Procfile's `web` (daphne)
and `market` (market loop with the simulator venue) processes on a free port, then drives the API
from another process, one API key per client account:

- order_api_orders_per_s: completed market orders per second with CONCURRENCY clients sending
  back to back for THROUGHPUT_S seconds;
- order_api_p99_ms: the 99th percentile latency at a steady (open-loop) 150 orders/s;
- order_api_floor_requests_per_s: the web stack's own ceiling for that bar. The same clients post
  the same order with a side the serializer refuses (400): daphne, the middleware, the API-key
  authentication, the throttles, the account's lookup, the parsing and an answer, but no dealing.
  An order costs at least that, so when it misses the orders' bar, the gap is not the dealing's.

Each account is in a netting group and alternates buy and sell, so positions do not pile up.

The load generator shares the machine's cores with the server, so it speaks HTTP/1.1 itself over
keep-alive connections: httpx cost about as much CPU per request as the server's whole handling.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.metric import emit, emit_vs_pgbench, pgbench_tps_for_ratio, settle  # noqa: E402

ACCOUNTS = 64
CONCURRENCY = 48
WARMUP_S = 3.0
THROUGHPUT_S = 15.0
ORDER_TIMEOUT_S = 30.0
FLOOR_S = 8.0
STEADY_RATE = 150
STEADY_S = 12.0
ORDERS_PER_S_BAR = 1000  # issue 16
P99_MS_BAR = 10  # at STEADY_RATE, issue 16
SYMBOL = "EURUSD"


def bench_env(name: str) -> dict[str, str]:
    """This process's environment pointed at a database and Redis prefix of the benchmark's own
    (`<db>_bench_<name>`, `<prefix>-bench-<name>`), with the throttles out of the way and DEBUG off,
    as production serves (no query log kept for every statement)."""
    env = dict(os.environ)
    base_db = env.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/livermore")
    prefix, _, db = base_db.rpartition("/")
    env["DATABASE_URL"] = f"{prefix}/{db.split('?')[0]}_bench_{name.replace('-', '_')}"
    env["REDIS_PREFIX"] = f"{env.get('REDIS_PREFIX', 'livermore')}-bench-{name}"
    env["LOG_LEVEL"] = "WARNING"
    env["DEBUG"] = "false"
    env["THROTTLE_USER"] = "10000000/min"
    env["THROTTLE_ORDERS"] = "10000000/min"
    return env


def fresh_database(env: dict[str, str]) -> None:
    """Set Django up in this process on `env` and give it an empty, migrated database."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
    import django

    django.setup()
    from django.core.management import call_command

    _drop_database()
    call_command("createdb", stdout=open(os.devnull, "w"))  # noqa: SIM115
    call_command("migrate", verbosity=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _procfile(kind: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return command.strip()
    raise SystemExit(f"no {kind} process in the Procfile")


def _setup(env: dict[str, str]) -> list[str]:
    """Fresh database: migrations, demo data, a netting group and funded accounts with API keys."""
    fresh_database(env)

    from marketdata.demo import demo_seed

    demo_seed()
    from brokerage.models import ClientGroup, MarginMode
    from tests.support.trading import open_account
    from tests.support.users import make_client
    from users.models import ApiKey

    group = ClientGroup.objects.create(
        name="bench", currency="USD", leverage=100, margin_mode=MarginMode.NETTING
    )
    keys = []
    for i in range(ACCOUNTS):
        user = make_client(f"bench{i}", password=None)
        account = open_account(user, group, "100000000")
        _, raw = ApiKey.issue(user=user, name="bench")
        keys.append(f"{account.number}:{raw}")
    from django.db import connections

    connections.close_all()
    return keys


def _drop_database() -> None:
    import psycopg
    from django.conf import settings
    from django.db import connections
    from psycopg import sql

    connections.close_all()
    db = settings.DATABASES["default"]
    params = {
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
    }
    with psycopg.connect(
        dbname="postgres", autocommit=True, **{k: v for k, v in params.items() if v is not None}
    ) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["NAME"])))


def _start(kind: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a Procfile process. Its stderr goes to a file (shown if it dies), not a pipe: nobody
    reads a pipe while the load runs, and a process that logs more than the pipe holds (64 kB of
    "Not Found" warnings, say) blocks in its logging lock and stops answering."""
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {**env, "PATH": f"{venv_bin}:{env.get('PATH', '')}"}
    log = tempfile.TemporaryFile()  # noqa: SIM115 (it lives as long as the process: _stop closes it)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", _procfile(kind)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    proc.stderr = log  # read back by _wait_ready if it dies, closed by _stop
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


def _wait_ready(
    base: str, procs: list[subprocess.Popen[bytes]], timeout_s: float = 90, path: str = "/readyz"
) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                err = ""
                if proc.stderr:
                    proc.stderr.seek(0)
                    err = proc.stderr.read().decode()[-2000:]
                raise SystemExit(f"a process died: {err}")
        try:
            if httpx.get(f"{base}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the stack did not become ready (fresh quotes) in time")


# -- load generator (runs in its own process) ---------------------------------------------------------


class HttpClient:
    """HTTP/1.1 requests over a pool of keep-alive connections to one server."""

    def __init__(self, base: str) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.request("POST", path, body, {"Content-Type": "application/json", **headers})

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.request("GET", path, b"", headers)

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened.append(writer)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status = int((await reader.readline()).split()[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            payload = b""
            while size := int((await reader.readline()).strip(), 16):
                payload += (await reader.readexactly(size + 2))[:-2]
            await reader.readline()
        else:
            payload = await reader.readexactly(length)
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, payload

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


async def open_loop(rate: float, total: int, one: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Start `one(n)` for n in range(total) at a steady `rate` per second (open loop: a slow answer
    never delays the next request), then wait for them all."""
    t0 = time.monotonic()
    pending = []
    for n in range(total):
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(one(n)))
    await asyncio.gather(*pending)


def latency_summary(latencies: list[float], errors: list[str]) -> dict[str, Any]:
    """p99 and p50 in ms of the measured requests (failed ones counted at the timeout), and failures."""
    latencies = sorted(latencies)
    return {
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "sent": len(latencies),
        "errors": errors[:5],
        "failed": len(errors),
    }


def web_and_client(env: dict[str, str], script: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Start the Procfile's `web` on a free port, run `script --client` in its own process with
    `config` (plus `base`) on stdin, and return the JSON it prints last (None if it failed); the web
    process is stopped and the benchmark's database dropped in any case."""
    port = _free_port()
    procs = [_start("web", {**env, "HOST": "127.0.0.1", "PORT": str(port)})]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, procs, path="/healthz")
        settle()  # the set-up's writes flushed, every web process done starting
        client = subprocess.run(
            [sys.executable, script, "--client"],
            input=json.dumps({"base": base, **config}),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        if client.returncode != 0:
            sys.stderr.write(client.stderr[-3000:])
            return None
        result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
        return result
    finally:
        for proc in procs:
            _stop(proc)
        _drop_database()


async def _order(client: HttpClient, account: str, key: str, side: str, expect: int = 201) -> float | str:
    """The order's latency in seconds, or why it failed: "timeout", or its status and error code
    when that is not `expect`."""
    body = json.dumps({"symbol": SYMBOL, "side": side, "volume": "0.01"}).encode()
    started = time.perf_counter()
    try:
        status, payload = await asyncio.wait_for(
            client.post(f"/api/v1/accounts/{account}/orders", body, {"Authorization": f"Api-Key {key}"}),
            timeout=ORDER_TIMEOUT_S,
        )
    except TimeoutError:
        return "timeout"  # an overloaded server: a failed order (its connection is dropped, not reused)
    elapsed = time.perf_counter() - started
    if status != expect:
        try:
            code = json.loads(payload)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
        return f"{status} {code}"
    return elapsed


async def _load(base: str, keys: list[str]) -> dict[str, Any]:
    accounts = [k.split(":", 1) for k in keys]
    # One client (keep-alive connections of its own) per account, as independent bots would be. One
    # pool shared by every account reuses its most recently freed connection first: at a steady rate
    # nearly every request rode the same connection, so the same web process, while the others idled.
    clients = {account: HttpClient(base) for account, _ in accounts}
    try:
        done = {"throughput": 0, "floor": 0}
        failures: dict[str, dict[str, int]] = {"throughput": {}, "floor": {}, "steady": {}}  # why, how often

        def failed(phase: str, why: str) -> None:
            failures[phase][why] = failures[phase].get(why, 0) + 1

        counting = asyncio.Event()

        async def worker(index: int, stop_at: float, phase: str) -> None:
            n = 0
            mine = accounts[index::CONCURRENCY]
            while time.monotonic() < stop_at:
                account, key = mine[n % len(mine)]
                if phase == "floor":  # refused by the serializer: everything but the dealing
                    side, expect = "hold", 400
                else:
                    side, expect = "buy" if (n // len(mine)) % 2 == 0 else "sell", 201
                n += 1
                result = await _order(clients[account], account, key, side, expect)
                if not counting.is_set():
                    continue
                if isinstance(result, str):
                    failed(phase, result)
                else:
                    done[phase] += 1

        async def closed_loop(phase: str, warmup_s: float, seconds: float) -> float:
            """CONCURRENCY workers back to back, each on its own accounts: completed per second."""
            counting.clear()
            stop_at = time.monotonic() + warmup_s + seconds
            tasks = [asyncio.create_task(worker(i, stop_at, phase)) for i in range(CONCURRENCY)]
            await asyncio.sleep(warmup_s)
            counting.set()
            measured_from = time.monotonic()
            await asyncio.gather(*tasks)
            return done[phase] / (time.monotonic() - measured_from)

        # Throughput, then the web stack's floor (already warm: one second's settling).
        throughput = await closed_loop("throughput", WARMUP_S, THROUGHPUT_S)
        floor = await closed_loop("floor", 1.0, FLOOR_S)

        # Latency: open loop at STEADY_RATE, each account alternating sides.
        latencies: list[float] = []
        sides: dict[str, int] = {}

        async def one(i: int) -> None:
            account, key = accounts[i % len(accounts)]
            sides[account] = sides.get(account, 0) + 1
            result = await _order(clients[account], account, key, "buy" if sides[account] % 2 else "sell")
            if isinstance(result, str):
                failed("steady", result)
                latencies.append(ORDER_TIMEOUT_S)  # a failed order counts as the slowest possible
            else:
                latencies.append(result)

        total = int(STEADY_RATE * STEADY_S)
        await open_loop(STEADY_RATE, total, one)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    finally:
        for client in clients.values():
            client.close()
    return {
        "orders_per_s": throughput,
        "floor_per_s": floor,
        "p99_ms": p99,
        "failures": failures,
        "steady_sent": total,
    }


def _client_main() -> None:
    config = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_load(config["base"], config["keys"]))))


# -- driver ------------------------------------------------------------------------------------------


def main() -> int:
    env = bench_env("order-api")
    keys = _setup(env)
    port = _free_port()
    env_run = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    procs = [_start("market", env_run), _start("web", env_run)]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, procs)
        client = subprocess.run(
            [sys.executable, __file__, "--client"],
            input=json.dumps({"base": base, "keys": keys}),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        if client.returncode != 0:
            sys.stderr.write(client.stderr[-3000:])
            return 1
        result = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        for proc in reversed(procs):
            _stop(proc)
        _drop_database()
    for phase, failures in result["failures"].items():
        if failures:
            why = ", ".join(f"{count} {reason}" for reason, count in sorted(failures.items()))
            sent = f", of {result['steady_sent']} sent" if phase == "steady" else ""
            sys.stderr.write(f"failed orders ({phase}{sent}): {why}\n")
    emit("order_api_orders_per_s", result["orders_per_s"], "orders/s", f">= {ORDERS_PER_S_BAR}")
    emit_vs_pgbench("order_api_vs_pgbench", result["orders_per_s"], ORDERS_PER_S_BAR, pgbench_tps_for_ratio())
    emit("order_api_p99_ms", result["p99_ms"], "ms", f"<= {P99_MS_BAR}")
    emit("order_api_floor_requests_per_s", result["floor_per_s"], "requests/s", f">= {ORDERS_PER_S_BAR}")
    return 0


if __name__ == "__main__":
    if "--client" in sys.argv:
        _client_main()
    else:
        sys.exit(main())
