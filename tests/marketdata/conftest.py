import asyncio
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.utils.module_loading import import_string
from pytest_django import Settings
from rest_framework.test import APIClient

from kernel.redis import key, sync_client
from marketdata import ticks
from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
from tests.fakes.fixtures import celery_worker, coinbase_key, coinbase_rest, oanda
from tests.support.instruments import make_instrument
from users.models import ApiKey, User


@pytest.fixture(autouse=True)
def _quote_listeners_stopped(settings: Settings) -> Iterator[None]:
    """Tests that feed a MarketLoop's quotes without running it start the process's quote listeners
    (brokerage's trigger watcher, live alerts) and never reach the loop's shutdown, which stops them:
    stop them here, before the test database goes."""
    yield
    for path in settings.QUOTE_LISTENERS:
        stop = getattr(import_string(path), "stop", None)
        if stop is not None:
            stop()


@pytest.fixture(autouse=True)
def redis_clean() -> Iterator[None]:
    """Every test starts and ends with no key under this run's Redis prefix."""
    redis = sync_client()

    def clean() -> None:
        for name in redis.scan_iter(match=key("*"), count=1000):
            redis.delete(name)

    clean()
    yield
    clean()


@pytest.fixture
def thread_db_closed() -> Iterator[None]:
    """For async tests: close the connection sync_to_async's thread opened, so the test database
    can be dropped at the end of the session."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture
def tick_table() -> Iterator[None]:
    """The tick table is outside Django's test flush (it is not a model): empty it around the test."""

    def drop_partitions() -> None:
        with connection.cursor() as cursor:
            for name, _, _ in ticks.partitions_list(cursor):
                cursor.execute(f"DROP TABLE {name}")
            cursor.execute(f"TRUNCATE {ticks.SEQ_TABLE}")

    drop_partitions()
    yield
    drop_partitions()


def simulator_venue(
    code: str, *, priority: int, symbols: list[Instrument], stale_after_ms: int = 1000
) -> Venue:
    venue = Venue.objects.create(
        code=code,
        name=code,
        kind=VenueKind.SIMULATOR,
        priority=priority,
        stale_after_ms=stale_after_ms,
        config={
            "seed": priority,
            "interval_ms": 50,
            "symbols": {i.symbol: {"price": "1.10000", "spread": "0.00010"} for i in symbols},
        },
    )
    for i in symbols:
        VenueSymbol.objects.create(venue=venue, instrument=i, venue_symbol=i.symbol)
    return venue


@pytest.fixture
def eurusd(db: None) -> Instrument:
    return make_instrument("EURUSD")


@pytest.fixture
def api(operator: User) -> APIClient:
    """A client authenticated the way bots are: with an API key."""
    _, raw = ApiKey.issue(user=operator, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


__all__ = ["celery_worker", "coinbase_key", "coinbase_rest", "oanda"]
