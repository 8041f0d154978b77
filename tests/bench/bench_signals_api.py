"""GET /api/v1/signals for 50 instruments x 6 timeframes through the HTTP server, served as `make run`
serves it.

Sets up its own database and Redis prefix (dropped afterwards): 50 enabled instruments, each with
HISTORY stored MACD-V rows per timeframe, except one timeframe in ten left unseeded with a few bars
(the grid then also reads bars for the reason). Starts the Procfile's `web` process on a free port and
sends the grid's request (every cell, API-key authentication, a user holding the signals permission)
from another process:

- signals_api_p99_ms: the 99th percentile latency at a steady (open-loop) RATE requests/s.
"""

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_order_api import (  # noqa: E402
    HttpClient,
    bench_env,
    fresh_database,
    latency_summary,
    open_loop,
    web_and_client,
)
from tests.bench.metric import emit  # noqa: E402

INSTRUMENTS = 50
HISTORY = 300
RATE = 10
WARMUP_S = 3.0
STEADY_S = 30.0
TIMEOUT_S = 10.0


def _setup(env: dict[str, str]) -> str:
    """Fresh database: instruments on an enabled venue, stored MACD-V and bars; returns an API key."""
    fresh_database(env)
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from alerts.models import IndicatorValue
    from alerts.signal_grid import TIMEFRAMES
    from marketdata.bars import TIMEFRAME_SECONDS
    from marketdata.models import Candle, Instrument, Venue, VenueKind, VenueSymbol
    from tests.support.users import grant, make_client
    from users.models import ApiKey

    venue = Venue.objects.create(code="sim", name="Simulator", kind=VenueKind.SIMULATOR)
    end = datetime(2026, 1, 5, tzinfo=UTC)
    for n in range(INSTRUMENTS):
        instrument = Instrument.objects.create(
            symbol=f"SYM{n:03d}",
            base_currency="SYM",
            quote_currency="USD",
            contract_size=Decimal(1),
            digits=2,
            pip_size=Decimal("0.01"),
            volume_min=Decimal("0.01"),
            volume_max=Decimal(100),
            volume_step=Decimal("0.01"),
        )
        VenueSymbol.objects.create(venue=venue, instrument=instrument, venue_symbol=instrument.symbol)
        values, bars = [], []
        for k, tf in enumerate(TIMEFRAMES):
            step = timedelta(seconds=TIMEFRAME_SECONDS[tf])
            if (n * len(TIMEFRAMES) + k) % 10 == 0:
                bars += [
                    Candle(
                        instrument=instrument,
                        timeframe=tf,
                        start=end - i * step,
                        open=1,
                        high=2,
                        low=1,
                        close=2,
                    )
                    for i in range(12)
                ]
                continue
            for i in range(HISTORY):
                value = Decimal(200 * ((i * 7 + n * 13 + k * 29) % 100) / 100 - 100)
                values.append(
                    IndicatorValue(
                        instrument=instrument,
                        timeframe=tf,
                        start=end - i * step,
                        name="macdv",
                        value=value,
                        signal=value / 2,
                        histogram=value / 2,
                    )
                )
        IndicatorValue.objects.bulk_create(values, batch_size=5000)
        Candle.objects.bulk_create(bars)
    user = grant(make_client("bench-signals", password=None), "alerts.view_signals")
    _, raw = ApiKey.issue(user=user, name="bench")
    from django.db import connection, connections

    from alerts.selectors import INDICATORS_VERSION
    from kernel import versions

    versions.bump_on_commit(INDICATORS_VERSION)  # as the bar-close job does after its writes

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    connections.close_all()
    return raw


async def _load(base: str, key: str) -> dict[str, Any]:
    client = HttpClient(base)  # a pool: a request takes an idle keep-alive connection or opens one
    headers = {"Authorization": f"Api-Key {key}"}
    latencies: list[float] = []
    errors: list[str] = []

    async def one(measured: bool) -> None:
        started = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(client.get("/api/v1/signals", headers), timeout=TIMEOUT_S)
        except TimeoutError:
            status, body = 0, b""
        elapsed = time.perf_counter() - started
        if status != 200 or len(json.loads(body)["results"]) != INSTRUMENTS * 6:
            errors.append(f"{status} {body[:200]!r}")
            elapsed = TIMEOUT_S  # a failed request counts as the slowest possible
        if measured:
            latencies.append(elapsed)

    try:
        await open_loop(RATE, int(RATE * (WARMUP_S + STEADY_S)), lambda i: one(i >= RATE * WARMUP_S))
    finally:
        client.close()
    return latency_summary(latencies, errors)


def _client_main() -> None:
    config = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_load(config["base"], config["key"]))))


def main() -> int:
    env = bench_env("signals-api")
    key = _setup(env)
    result = web_and_client(env, __file__, {"key": key})
    if result is None:
        return 1
    if result["failed"]:
        sys.stderr.write(f"failed requests: {result['failed']}/{result['sent']}: {result['errors']}\n")
    sys.stderr.write(f"p50 {result['p50_ms']:.2f} ms over {result['sent']} requests\n")
    emit("signals_api_p99_ms", result["p99_ms"], "ms", "<= 20")
    return 0


if __name__ == "__main__":
    if "--client" in sys.argv:
        _client_main()
    else:
        sys.exit(main())
