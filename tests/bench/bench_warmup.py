"""warmup_s: from an empty database to a seeded MACD-V on all six timeframes for 20 instruments.

A real MarketLoop (adapters, LP manager, candle stage, the warm-up in its history thread) runs
against the local venue fakes over real sockets: 8 instruments on Coinbase (public candles, no key),
6 on Binance (klines), 6 on OANDA (candles, token). The clock starts when the loop starts and stops
when its start-up warm-up has stored CANDLE_WARMUP_BARS (200) closed bars per instrument and
timeframe; then every (instrument, timeframe) is checked to give a seeded MACD-V through the
alerts' own reads (closed_bars, macdv), or the run fails. A throwaway PostgreSQL database
(<name>_bench) and a -bench Redis prefix."""

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
os.environ["REDIS_PREFIX"] = os.environ.get("REDIS_PREFIX", "livermore") + "-bench"
os.environ.setdefault("LOG_LEVEL", "WARNING")
for name in ("COINBASE_API_KEY_NAME", "COINBASE_PRIVATE_KEY_PEM", "OANDA_TOKEN", "OANDA_ACCOUNT_ID"):
    os.environ.pop(name, None)

import django  # noqa: E402

django.setup()

from decimal import Decimal  # noqa: E402

import numpy as np  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

INSTRUMENTS = {
    "coinbase": [f"C{i}USD" for i in range(8)],
    "binance": [f"B{i}USDT" for i in range(6)],
    "oanda": [f"F{i}JPY" for i in range(6)],
}


def create_rows(urls: dict[str, dict[str, str]], token: str, account: str) -> None:
    from marketdata.models import Instrument, Venue, VenueSymbol

    names = {"coinbase": lambda s: f"{s[:2]}-USD", "binance": str.lower, "oanda": lambda s: f"{s[:2]}_JPY"}
    for kind, symbols in INSTRUMENTS.items():
        credentials = json.dumps({"token": token}) if kind == "oanda" else ""
        config = {**urls[kind], **({"account_id": account} if kind == "oanda" else {})}
        venue = Venue.objects.create(code=kind, name=kind, kind=kind, config=config, credentials=credentials)
        for symbol in symbols:
            instrument = Instrument.objects.create(
                symbol=symbol,
                base_currency=symbol[:3],
                quote_currency=symbol[3:6],
                contract_size=Decimal(1),
                digits=5,
                pip_size=Decimal("0.0001"),
                volume_min=Decimal("0.01"),
                volume_max=Decimal(100),
                volume_step=Decimal("0.01"),
            )
            VenueSymbol.objects.create(venue=venue, instrument=instrument, venue_symbol=names[kind](symbol))


def seeded_everywhere() -> int:
    """How many (instrument, timeframe) give a seeded MACD-V on their last closed bar."""
    from alerts.indicators import macdv
    from alerts.selectors import closed_bars
    from marketdata.bars import TIMEFRAME_SECONDS
    from marketdata.models import Instrument

    now = int(time.time())
    seeded = 0
    for instrument in Instrument.objects.all():
        for timeframe, step in TIMEFRAME_SECONDS.items():
            last = now - now % step - step
            bars = closed_bars(instrument=instrument, timeframe=timeframe, end=last, limit=200)
            result = macdv(
                np.array([float(b.high) for b in bars]),
                np.array([float(b.low) for b in bars]),
                np.array([float(b.close) for b in bars]),
                np.array([b.synthetic for b in bars]),
            )
            seeded += result.seeded
    return seeded


async def warm_up_s() -> float:
    from marketdata.loop import MarketLoop
    from tests.fakes.binance import BinanceRestFake, BinanceWsFake
    from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, CoinbaseWsFake
    from tests.fakes.oanda import OandaFake

    token = "bench-token"
    async with CoinbaseWsFake() as cb_ws, BinanceWsFake() as bn_ws:
        with (
            CoinbaseRestFake(CoinbaseKey.generate()) as cb_rest,
            BinanceRestFake() as bn_rest,
            OandaFake(token, heartbeat_interval_s=1.0) as oanda,
        ):
            urls = {
                "coinbase": {"ws_url": cb_ws.url, "rest_url": cb_rest.url},
                "binance": {"ws_url": bn_ws.url, "rest_url": bn_rest.url},
                "oanda": {"stream_url": oanda.url, "rest_url": oanda.url},
            }
            await sync_to_async(create_rows)(urls, token, oanda.account_id)
            loop = MarketLoop()
            started = time.perf_counter()
            task = asyncio.create_task(loop.run())
            try:
                await asyncio.wait_for(loop.warmed_up.wait(), 600)
                elapsed = time.perf_counter() - started
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            requests = len(cb_rest.requests) + len(bn_rest.requests) + len(oanda.requests)
    expected = sum(map(len, INSTRUMENTS.values())) * 6
    seeded = await sync_to_async(seeded_everywhere)()
    await sync_to_async(connections.close_all)()
    if seeded != expected:
        raise SystemExit(f"MACD-V seeded on {seeded} of {expected} (instrument, timeframe)")
    print(f"# {expected} series seeded, {requests} history requests", file=sys.stderr)
    return elapsed


def main() -> None:
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = (
        settings.DATABASES["default"]["NAME"] + "_bench"
    )
    settings.CANDLE_WARMUP_BARS = 200
    old = setup_databases(verbosity=0, interactive=False)
    try:
        emit("warmup_s", asyncio.run(warm_up_s()), "s", "<= 60")
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    main()
