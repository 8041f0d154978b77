import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.db import connection
from rest_framework.test import APIClient

from brokerage.models import ClientGroup, GroupInstrument, MarginMode, TradingAccount
from kernel.redis import key, sync_client
from marketdata.demo import demo_seed
from marketdata.models import Instrument, Venue
from marketdata.publisher import ticker_key
from marketdata.quotes import Quote, SelectedQuote
from tests.support.trading import open_account
from tests.support.users import make_role_user
from users.models import User
from users.roles import BACK_OFFICE, DEALER, RISK

D = Decimal
PRICES = {
    "EURUSD": ("1.08500", "1.08510"),
    "GBPUSD": ("1.27000", "1.27016"),
    "USDJPY": ("150.000", "150.014"),
}

QuoteSetter = Callable[[str, str, str], None]


class Market:
    """Publishes selected quotes the way the market process does: into the Redis ticker cache."""

    def __init__(self) -> None:
        self.seq = 0
        self.symbols: set[str] = set()

    def selected(
        self, symbol: str, bid: str, ask: str, *, tradable: bool = True, age_ms: int = 0
    ) -> SelectedQuote:
        self.seq += 1
        now = time.time_ns() - age_ms * 1_000_000
        quote = Quote(symbol=symbol, venue="sim", bid=D(bid), ask=D(ask), venue_ts=now, recv_ts=now)
        return SelectedQuote(symbol=symbol, seq=self.seq, quote=quote, tradable=tradable)

    def set(
        self, symbol: str, bid: str, ask: str, *, tradable: bool = True, age_ms: int = 0
    ) -> SelectedQuote:
        selected = self.selected(symbol, bid, ask, tradable=tradable, age_ms=age_ms)
        sync_client().set(ticker_key(symbol), json.dumps(selected.to_wire()), ex=60)
        self.symbols.add(symbol)
        return selected

    def clear(self, symbol: str) -> None:
        sync_client().delete(ticker_key(symbol))


@pytest.fixture
def market() -> Iterator[Market]:
    m = Market()
    yield m
    for symbol in m.symbols:
        m.clear(symbol)


def ledger_problems() -> list[str]:
    """Every way the ledger (and the margin reserved for routed orders) can be inconsistent, in SQL."""
    problems = []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.number, a.balance, coalesce(sum(p.amount), 0)
              FROM brokerage_tradingaccount a
              LEFT JOIN brokerage_ledgeraccount l ON l.trading_account_id = a.id
              LEFT JOIN brokerage_posting p ON p.ledger_account_id = l.id
             GROUP BY a.id HAVING a.balance <> coalesce(sum(p.amount), 0)
            """
        )
        problems += [f"account {n}: balance {b} but postings sum to {s}" for n, b, s in cursor.fetchall()]
        cursor.execute(
            "SELECT transaction_id, sum(amount) FROM brokerage_posting"
            " GROUP BY transaction_id HAVING sum(amount) <> 0"
        )
        problems += [f"transaction {t} sums to {s}" for t, s in cursor.fetchall()]
        cursor.execute(
            """
            SELECT a.number, a.margin_reserved, coalesce(sum(o.margin), 0)
              FROM brokerage_tradingaccount a
              LEFT JOIN brokerage_order o ON o.account_id = a.id AND o.status = 'routed'
             GROUP BY a.id HAVING a.margin_reserved <> coalesce(sum(o.margin), 0)
            """
        )
        problems += [
            f"account {n}: {r} margin reserved but its routed orders hold {s}"
            for n, r, s in cursor.fetchall()
        ]
        cursor.execute("SELECT coalesce(sum(amount), 0) FROM brokerage_posting")
        (total,) = cursor.fetchone()
        if total != 0:
            problems.append(f"all postings sum to {total}")
    return problems


@pytest.fixture(autouse=True)
def _ledger_consistent_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test marked django_db: deferred ledger checks run now, and the ledger is
    consistent. (pytest-django's autouse marker fixture sets the database up before this one, so it
    is still there at this teardown.)"""
    yield
    if request.node.get_closest_marker("django_db") is None:
        return
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert ledger_problems() == []


# Quotes in these tests are published once and must stay fresh for a whole test on a loaded
# machine; staleness itself is tested with quotes older than this.
STALE_AFTER_MS = 30_000


@pytest.fixture
def instruments(db: None) -> dict[str, Instrument]:
    demo_seed()
    Venue.objects.filter(code="sim").update(stale_after_ms=STALE_AFTER_MS)
    return {i.symbol: i for i in Instrument.objects.all()}


@pytest.fixture
def operator(db: None) -> User:
    """Here the desk's operator holds the dealer, back office and risk roles (not a superuser)."""
    return make_role_user("olivia", DEALER, BACK_OFFICE, RISK)


@pytest.fixture
def group(instruments: dict[str, Instrument]) -> ClientGroup:
    return ClientGroup.objects.create(name="standard", currency="USD", leverage=100)


@pytest.fixture
def netting_group(instruments: dict[str, Instrument]) -> ClientGroup:
    return ClientGroup.objects.create(
        name="netting", currency="USD", leverage=100, margin_mode=MarginMode.NETTING
    )


@pytest.fixture
def account(alice: User, group: ClientGroup) -> TradingAccount:
    return open_account(alice, group)


@pytest.fixture
def alice_account(alice: User, group: ClientGroup) -> TradingAccount:
    return open_account(alice, group, "10000")


@pytest.fixture
def bob_account(bob: User, group: ClientGroup) -> TradingAccount:
    return open_account(bob, group, "10000")


def set_commission(group: ClientGroup, instrument: Instrument, per_lot: str) -> None:
    GroupInstrument.objects.update_or_create(
        group=group, instrument=instrument, defaults={"commission_per_lot": D(per_lot)}
    )


def quote_set(symbol: str, bid: str, ask: str) -> None:
    """What the market process publishes for a selected quote (marketdata.publisher), fresh now."""
    wire = {
        "symbol": symbol,
        "seq": 1,
        "tradable": True,
        "venue": "sim",
        "bid": bid,
        "ask": ask,
        "ts": time.time_ns() // 1_000_000,
    }
    sync_client().set(ticker_key(symbol), json.dumps(wire), ex=60)


@pytest.fixture(autouse=True)
def _redis_clean() -> None:
    """Throttle counters and tickers live in Redis, outside the test transaction."""
    client = sync_client()
    for name in [*client.scan_iter(match=key("*throttle_*")), *client.scan_iter(match=key("ticker", "*"))]:
        client.delete(name)


@pytest.fixture
def quotes(db: None) -> QuoteSetter:
    demo_seed()
    for symbol, (bid, ask) in PRICES.items():
        quote_set(symbol, bid, ask)
    return quote_set


def client_for(user: User) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def alice_api(alice: User) -> APIClient:
    return client_for(alice)
