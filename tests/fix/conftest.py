import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from brokerage.models import ClientGroup, TradingAccount
from fix.models import FixRole, FixSession, RoutingAction, RoutingRule
from marketdata.demo import demo_seed
from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
from tests.brokerage.conftest import Market
from tests.fakes.fix_peer import FixPeer
from tests.support.stack import free_port
from tests.support.trading import open_account
from tests.support.users import make_client

pytest.importorskip("quickfix")

from fix.desk import OrderDesk
from fix.engine import FixEngine
from fix.simulator import LPSimulator, SimulatorOptions

D = Decimal

PASSWORD = "pw-" + "x7Qe9"  # a test credential, assembled so no secret scanner mistakes it


@pytest.fixture
def fix_venue(transactional_db: None) -> Venue:
    demo_seed()
    venue = Venue.objects.create(
        code="lpx", name="FIX LP", kind=VenueKind.FIX, priority=5, stale_after_ms=2000
    )
    for symbol, name in (("EURUSD", "EUR/USD"), ("USDJPY", "USD/JPY")):
        VenueSymbol.objects.create(
            venue=venue, instrument=Instrument.objects.get(symbol=symbol), venue_symbol=name
        )
    return venue


@pytest.fixture
def peer() -> Iterator[FixPeer]:
    p = FixPeer(sender="PEER", target="LIVERMORE")
    yield p
    p.close()


@pytest.fixture
def make_session(fix_venue: Venue) -> Callable[..., FixSession]:
    def make(port: int, **fields: Any) -> FixSession:
        values: dict[str, Any] = {
            "name": "peer",
            "sender_comp_id": "LIVERMORE",
            "target_comp_id": "PEER",
            "host": "127.0.0.1",
            "port": port,
            "heartbeat_s": 1,
            "reconnect_s": 1,
            "role": FixRole.BOTH,
            "venue": fix_venue,
            "username": "livermore",
            "password": PASSWORD,
            "account": "HOUSE",
        }
        values.update(fields)
        return FixSession.objects.create(**values)

    return make


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def run_engine(store_dir: Path) -> Iterator[Callable[..., FixEngine]]:
    started: list[tuple[FixEngine, threading.Thread]] = []

    def start(desk: dict[str, Any] | None = None, **kwargs: Any) -> FixEngine:
        desk = desk or {}
        engine = FixEngine(
            store_dir=store_dir,
            reload_interval_s=0.2,
            state_interval_s=0.2,
            tick_s=0.05,
            desk_factory=lambda e: OrderDesk(e, **desk),
            **kwargs,
        )
        thread = threading.Thread(target=engine.run, daemon=True)
        thread.start()
        started.append((engine, thread))
        return engine

    yield start
    for engine, thread in started:
        engine.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "runfix engine did not stop"


SIM_SYMBOLS = {
    "EUR/USD": {"price": "1.08500", "spread": "0.00012"},
    "USD/JPY": {"price": "150.000", "spread": "0.014"},
}


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., LPSimulator]]:
    started: list[LPSimulator] = []

    def start(**options: Any) -> LPSimulator:
        values: dict[str, Any] = {
            "port": free_port(),
            "sender_comp_id": "LPSIM",
            "target_comp_id": "LIVERMORE",
            "username": "livermore",
            "password": PASSWORD,
            "symbols": SIM_SYMBOLS,
            "interval_ms": 100,
            "store_dir": tmp_path / f"sim{len(started)}",
        }
        values.update(options)
        sim = LPSimulator(SimulatorOptions(**values))
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def a_book(fix_venue: Venue) -> Callable[..., TradingAccount]:
    """A funded account in a group with a 0.00002 markup, a rule routing every order to the session's
    LP, and a quote to price it with."""

    def make(session: FixSession, *, balance: str = "100000", **rule: Any) -> TradingAccount:
        group = ClientGroup.objects.create(
            name=f"abook-{session.name}",
            currency="USD",
            leverage=100,
            markup_default=D("0.00002"),
        )
        account = open_account(make_client(f"client-{session.name}"), group, balance)
        RoutingRule.objects.create(
            priority=10, name="all to the LP", action=RoutingAction.A_BOOK, session=session, **rule
        )
        Market().set("EURUSD", "1.08500", "1.08512")
        Market().set("USDJPY", "150.000", "150.014")
        return account

    return make
