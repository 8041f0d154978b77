"""FIX benchmarks, against a throwaway PostgreSQL database (<name>_bench_fix, dropped afterwards) and a
-bench-fix Redis prefix. The LP simulator runs as its own process (`manage.py fix_lp_simulator`).

fix_order_roundtrip_p99_ms: A-Book market orders one after another (brokerage order_submit ->
runfix's engine routes and sends); the time from sending the NewOrderSingle to receiving the
filled ExecutionReport, on loopback.

fix_md_quotes_per_s: the simulator streams incremental refreshes as fast as it can; runfix (its own
process) publishes top of book; this process runs the market loop's FIX adapter into an LPManager
and counts the quotes it takes in per second.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
os.environ["REDIS_PREFIX"] = os.environ.get("REDIS_PREFIX", "livermore") + "-bench-fix"
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 300
WARMUP = 20
MD_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark setup timed out")
        time.sleep(0.01)


class Processes:
    def __init__(self, store: Path) -> None:
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "FIX_STORE_DIR": str(store),
            "FIX_LEASE_TTL_S": "2",
        }
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> None:
        self.running.append(
            subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL
            )
        )

    def stop(self) -> None:
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()


def setup_data() -> tuple[object, object]:
    from brokerage.models import ClientGroup
    from fix.models import FixRole, FixSession, RoutingAction, RoutingRule
    from marketdata.demo import demo_seed
    from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
    from tests.support.trading import open_account
    from tests.support.users import make_client

    demo_seed()
    venue = Venue.objects.create(code="benchfix", name="bench FIX", kind=VenueKind.FIX, priority=5)
    for instrument in Instrument.objects.all():
        VenueSymbol.objects.create(venue=venue, instrument=instrument, venue_symbol=instrument.symbol)
    session = FixSession.objects.create(
        name="bench",
        sender_comp_id="BENCH",
        target_comp_id="LPSIM",
        host="127.0.0.1",
        port=free_port(),
        heartbeat_s=30,
        reconnect_s=1,
        role=FixRole.BOTH,
        venue=venue,
        username="bench",
        password=os.urandom(12).hex(),
    )
    group = ClientGroup.objects.create(name="abook", currency="USD", leverage=100)
    account = open_account(make_client("bench", password=None), group, "10000000")
    RoutingRule.objects.create(priority=1, name="all", action=RoutingAction.A_BOOK, session=session)
    return session, account


def fresh_quote() -> None:
    """The dealing engine prices from the market process's ticker cache; keep a quote there fresh."""
    from kernel.redis import sync_client
    from marketdata.publisher import ticker_key
    from marketdata.quotes import Quote, SelectedQuote

    now = time.time_ns()
    quote = Quote("EURUSD", "sim", D("1.08500"), D("1.08512"), now, now)
    sync_client().set(
        ticker_key("EURUSD"), json.dumps(SelectedQuote("EURUSD", 1, quote, True).to_wire()), ex=60
    )


def order_roundtrip_p99_ms(session, account, store: Path) -> float:  # type: ignore[no-untyped-def]
    from brokerage.services import order_submit
    from fix.desk import OrderDesk
    from fix.engine import FixEngine
    from fix.models import FixOrder
    from fix.selectors import fix_session_state

    desks: list[OrderDesk] = []

    def desk_factory(engine: FixEngine) -> OrderDesk:
        desks.append(OrderDesk(engine))
        return desks[0]

    engine = FixEngine(store_dir=store, desk_factory=desk_factory)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: (fix_session_state(session=session) or {}).get("logged_on"))
        for i in range(WARMUP + ORDERS):
            if i == WARMUP:
                desks[0].round_trips_ms.clear()
            fresh_quote()
            order = order_submit(
                account=account, symbol="EURUSD", side="buy" if i % 2 else "sell", volume=D("0.1")
            )
            engine.wake()
            wait_for(lambda order=order: FixOrder.objects.filter(order=order, settled=True).exists())
        samples = sorted(desks[0].round_trips_ms)
    finally:
        engine.stop()
        thread.join(timeout=30)
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def md_quotes_per_s(session) -> float:  # type: ignore[no-untyped-def]
    from marketdata.adapters.fix import FixAdapter
    from marketdata.lpmanager import LPManager, VenueSettings
    from marketdata.selectors import venue_configs

    config = next(c for c in venue_configs() if c.code == "benchfix")
    manager = LPManager({"benchfix": VenueSettings(priority=5, stale_after_ms=5000)})

    async def measure() -> float:
        adapter = FixAdapter(config, manager.on_quote)
        task = asyncio.create_task(adapter.run())
        for _ in range(600):
            if adapter.stats.quotes >= 1000:
                break
            await asyncio.sleep(0.05)
        start, count = time.monotonic(), adapter.stats.quotes
        await asyncio.sleep(MD_SECONDS)
        rate = (adapter.stats.quotes - count) / (time.monotonic() - start)
        task.cancel()
        return rate

    return asyncio.run(measure())


def main() -> None:
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = (
        settings.DATABASES["default"]["NAME"] + "_bench_fix"
    )
    old = setup_databases(verbosity=0, interactive=False)
    try:
        with TemporaryDirectory() as tmp:
            store = Path(tmp)
            session, account = setup_data()
            processes = Processes(store)
            try:
                processes.start("fix_lp_simulator", "--session", "bench", "--interval-ms", "1000")
                p99 = order_roundtrip_p99_ms(session, account, store)
                emit("fix_order_roundtrip_p99_ms", p99, "ms", "<= 10")
                processes.stop()
                processes.start("fix_lp_simulator", "--session", "bench", "--interval-ms", "0.1")
                processes.start("runfix")
                emit("fix_md_quotes_per_s", md_quotes_per_s(session), "quotes/s", ">= 5000")
            finally:
                processes.stop()
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
        from kernel.redis import sync_client

        client = sync_client()
        for key in client.scan_iter(f"{settings.REDIS_PREFIX}:*"):
            client.delete(key)


if __name__ == "__main__":
    main()
