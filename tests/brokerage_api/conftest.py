import json
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from brokerage import services
from brokerage.models import ClientGroup, TradingAccount
from kernel.redis import key, sync_client
from marketdata.demo import demo_seed
from marketdata.publisher import ticker_key
from tests.brokerage.conftest import role_user
from users.models import User
from users.roles import BACK_OFFICE, DEALER, RISK

PASSWORD = "correct horse battery staple"
PRICES = {
    "EURUSD": ("1.08500", "1.08510"),
    "GBPUSD": ("1.27000", "1.27016"),
    "USDJPY": ("150.000", "150.014"),
}

QuoteSetter = Callable[[str, str, str], None]


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
def _fast_hasher(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


@pytest.fixture
def group(db: None) -> ClientGroup:
    return ClientGroup.objects.create(name="standard", currency="USD", leverage=100)


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def operator(db: None) -> User:
    return role_user("desk", DEALER, BACK_OFFICE, RISK, password=PASSWORD)


def funded_account(owner: User, group: ClientGroup, amount: str = "10000") -> TradingAccount:
    account = services.account_open(owner=owner, group=group)
    services.account_deposit(account=account, amount=Decimal(amount))
    account.refresh_from_db()
    return account


@pytest.fixture
def alice_account(alice: User, group: ClientGroup) -> TradingAccount:
    return funded_account(alice, group)


@pytest.fixture
def bob_account(bob: User, group: ClientGroup) -> TradingAccount:
    return funded_account(bob, group)


def client_for(user: User) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def alice_api(alice: User) -> APIClient:
    return client_for(alice)
