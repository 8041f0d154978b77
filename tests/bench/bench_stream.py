"""Benchmarks of /ws/v1/stream. Starts everything it needs: the stream server (daphne with flow
control, the project's ASGI app) as its own process on a free port, this process as the market (the
real LP manager -> QuotePublisher -> Redis path), and WebSocket clients in two other processes.

- quote_to_subscriber_p50_ms / _p99_ms: 200 quotes/s over 40 symbols (5/s each) to 50 subscribers
  of quotes:* with default conflation; from the quote entering the LP manager to the frame arriving
  at the client (entry and arrival times are joined exactly by (symbol, seq)).
- deliveries_per_s: conflation off, 100 subscribers, the quote rate raised step by step until a step
  fails (p99 >= 100 ms or under 99% of frames arriving): the knee, i.e. the rate of quote frames
  delivered per second by the one server process at the last step before the first failing one. A
  ladder whose top step still passes measures the ladder, not the server: the script then fails.

Uses its own Redis key prefix, a temporary user and 40 temporary instruments, removed at the end.
"""

import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.metric import emit  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
os.environ.setdefault("DEBUG", "false")  # as production serves: no query log on every statement
os.environ.setdefault("LOG_LEVEL", "WARNING")
if "BENCH_STREAM_PREFIX" not in os.environ:
    os.environ["BENCH_STREAM_PREFIX"] = (
        f"{os.environ.get('REDIS_PREFIX', 'livermore')}-bench-stream-{os.getpid()}"
    )
os.environ["REDIS_PREFIX"] = os.environ["BENCH_STREAM_PREFIX"]
django.setup()

import numpy as np  # noqa: E402
import websockets  # noqa: E402

SYMBOLS = [f"BST{i:02d}" for i in range(40)]
MAX_SEQ = 200_000
LATENCY_RATE, LATENCY_CLIENTS, LATENCY_SECONDS = 200, 50, 10.0
THROUGHPUT_CLIENTS, STEP_SECONDS = 100, 4.0
THROUGHPUT_RATES = [
    int(r)
    for r in os.environ.get(
        "BENCH_STREAM_RATES", "100,200,300,400,500,600,800,1000,1250,1500,2000,2500,3000,4000,5000"
    ).split(",")
]
CLIENT_PROCESSES = 2


# -- clients (separate processes) ---------------------------------------------------------------
async def _clients(url: str, token: str, count: int, subscribe: dict[str, Any], ready: Any, stop: Any) -> Any:
    keys: list[int] = []
    arrivals: list[int] = []
    headers = {"Authorization": f"Bearer {token}"}
    sockets = [
        await websockets.connect(url, additional_headers=headers, compression=None, max_queue=None)
        for _ in range(count)
    ]
    for ws in sockets:
        await ws.send(json.dumps(subscribe))

    async def read(ws: Any) -> None:
        loads, now, kappend, aappend = json.loads, time.time_ns, keys.append, arrivals.append
        async for raw in ws:
            t = now()
            frame = loads(raw)
            if frame["type"] == "quote":
                data = frame["data"]
                kappend(int(data["symbol"][3:]) * MAX_SEQ + data["seq"])
                aappend(t)

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    ready.set()
    await asyncio.to_thread(stop.wait)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    return np.array(keys, dtype=np.int64), np.array(arrivals, dtype=np.int64)


def client_process(
    url: str, token: str, count: int, subscribe: dict[str, Any], ready: Any, stop: Any, out: Any
) -> None:
    out.put(asyncio.run(_clients(url, token, count, subscribe, ready, stop)))


# -- the market (this process) ------------------------------------------------------------------
class Feed:
    """Quotes into the real LP manager, whose output is the real QuotePublisher."""

    def __init__(self) -> None:
        from marketdata.lpmanager import LPManager, VenueSettings
        from marketdata.publisher import QuotePublisher

        self.publisher = QuotePublisher()
        self.manager = LPManager(
            {"bench": VenueSettings(priority=1, stale_after_ms=60_000)}, [self.publisher]
        )
        self.entered = np.zeros((len(SYMBOLS), MAX_SEQ), dtype=np.int64)  # ns the quote entered
        self.order = np.full((len(SYMBOLS), MAX_SEQ), -1, dtype=np.int64)  # its index in the feed
        self.sent = 0

    async def run(self, rate: float, seconds: float) -> tuple[int, int, float]:
        """`rate` quotes/s round-robin over the symbols; returns (first index, end index, seconds)."""
        from marketdata.quotes import Quote

        first = self.sent
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            while self.sent - first < due:
                i = self.sent % len(SYMBOLS)
                price = Decimal(100 + self.sent % 97) / 100
                t = time.time_ns()
                self.manager.on_quote(Quote(SYMBOLS[i], "bench", price, price + Decimal("0.01"), t, t))
                seq = self.manager.seq[SYMBOLS[i]]
                self.entered[i, seq], self.order[i, seq] = t, self.sent
                self.sent += 1
            await asyncio.sleep(0.002)
        return first, self.sent, time.monotonic() - start


async def run_clients(
    url: str,
    token: str,
    feed: Feed,
    total: int,
    subscribe: dict[str, Any],
    steps: Sequence[tuple[float, float]],
) -> tuple[list[tuple[int, int, float]], np.ndarray, np.ndarray]:
    """Clients in CLIENT_PROCESSES processes; the feed runs each (rate, seconds) step; returns the
    steps' spans and, per frame received, its quote's entry time and index and the latency (ms)."""
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    procs, readies = [], []
    for _ in range(CLIENT_PROCESSES):
        ready = ctx.Event()
        args = (url, token, total // CLIENT_PROCESSES, subscribe, ready, stop, out)
        procs.append(ctx.Process(target=client_process, args=args, daemon=True))
        readies.append(ready)
        procs[-1].start()
    for ready in readies:
        await asyncio.to_thread(ready.wait, 120)
    await feed.run(steps[0][0], 1.0)  # warm up
    await asyncio.sleep(0.5)
    spans = [await feed.run(rate, seconds) for rate, seconds in steps]
    await asyncio.sleep(1.5)
    stop.set()
    results = [await asyncio.to_thread(out.get, True, 300) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    keys = np.concatenate([r[0] for r in results])
    arrivals = np.concatenate([r[1] for r in results])
    sym, seq = keys // MAX_SEQ, keys % MAX_SEQ
    latency_ms = (arrivals - feed.entered[sym, seq]) / 1e6
    return spans, feed.order[sym, seq], latency_ms


async def measure(url: str, token: str) -> list[tuple[str, float, str, str]]:
    feed = Feed()
    publisher = asyncio.create_task(feed.publisher.run())
    try:
        (span,), index, latency = await run_clients(
            url,
            token,
            feed,
            LATENCY_CLIENTS,
            {"type": "subscribe", "channels": ["quotes:*"]},
            [(LATENCY_RATE, LATENCY_SECONDS)],
        )
        lat = latency[(index >= span[0]) & (index < span[1])]
        expected = (span[1] - span[0]) * LATENCY_CLIENTS
        print(f"latency: {len(lat)}/{expected} frames", file=sys.stderr)
        metrics = [
            metric("quote_to_subscriber_p50_ms", float(np.percentile(lat, 50)), "ms", "<= 5"),
            metric("quote_to_subscriber_p99_ms", float(np.percentile(lat, 99)), "ms", "<= 25"),
        ]
        steps = [(rate, STEP_SECONDS) for rate in THROUGHPUT_RATES]
        subscribe = {"type": "subscribe", "channels": ["quotes:*"], "conflate": False}
        spans, index, latency = await run_clients(url, token, feed, THROUGHPUT_CLIENTS, subscribe, steps)
        knee, failed = 0.0, False
        for first, end, seconds in spans:
            lat = latency[(index >= first) & (index < end)]
            expected = (end - first) * THROUGHPUT_CLIENTS
            rate = len(lat) / seconds
            p99 = float(np.percentile(lat, 99)) if len(lat) else float("inf")
            ok = p99 < 100 and len(lat) >= 0.99 * expected
            print(
                f"step: {rate:.0f} deliveries/s p99 {p99:.1f} ms {len(lat)}/{expected} ok={ok}",
                file=sys.stderr,
            )
            if not ok:
                failed = True
            elif not failed:
                knee = rate
        if not failed:
            raise SystemExit("deliveries_per_s: the ladder's top step passed; raise BENCH_STREAM_RATES")
        metrics.append(metric("deliveries_per_s", knee, "frames/s", ">= 20000"))
        return metrics
    finally:
        publisher.cancel()


def metric(name: str, value: float, unit: str, target: str) -> tuple[str, float, str, str]:
    return name, value, unit, target


def main() -> None:
    from rest_framework_simplejwt.tokens import AccessToken

    from kernel.redis import sync_client
    from marketdata.models import Instrument
    from tests.marketdata.streamkit import stream_server
    from tests.support.users import make_client

    prefix = os.environ["REDIS_PREFIX"]
    user = make_client(f"bench-stream-{os.getpid()}", password=None)
    Instrument.objects.bulk_create(
        Instrument(
            symbol=s,
            base_currency="BST",
            quote_currency="USD",
            contract_size=1,
            digits=2,
            tick_size=Decimal("0.01"),  # bulk_create skips save(), which fills it from digits
            pip_size=Decimal("0.01"),
            volume_min=1,
            volume_max=100,
            volume_step=1,
        )
        for s in SYMBOLS
    )
    try:
        with stream_server({"REDIS_PREFIX": prefix}) as base:
            metrics = asyncio.run(measure(f"{base}/ws/v1/stream", str(AccessToken.for_user(user))))
        for m in metrics:
            emit(*m)
    finally:
        Instrument.objects.filter(symbol__in=SYMBOLS).delete()
        user.delete()
        client = sync_client()
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


if __name__ == "__main__":
    main()
