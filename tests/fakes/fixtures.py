"""Pytest fixtures for the venue fakes; a test package's conftest imports the ones it uses."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import pytest

from marketdata.adapters.base import Adapter, Backoff

from .coinbase import CoinbaseKey, CoinbaseRestFake
from .oanda import OandaFake


@pytest.fixture
def coinbase_key() -> CoinbaseKey:
    return CoinbaseKey.generate()


@pytest.fixture
def coinbase_rest(coinbase_key: CoinbaseKey) -> Iterator[CoinbaseRestFake]:
    with CoinbaseRestFake(coinbase_key) as fake:
        yield fake


@pytest.fixture
def oanda() -> Iterator[OandaFake]:
    with OandaFake("oanda-test-token", heartbeat_interval_s=0.2) as fake:
        yield fake


def fast_backoff() -> Backoff:
    return Backoff(base_s=0.02, cap_s=0.1)


AdapterT = TypeVar("AdapterT", bound=Adapter)


@contextlib.asynccontextmanager
async def running(adapter: AdapterT) -> AsyncIterator[AdapterT]:
    """Run an adapter's reconnecting loop for the duration of the block."""
    task = asyncio.create_task(adapter.run())
    try:
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def celery_worker() -> Iterator[None]:
    """A real Celery worker (solo pool, in a thread) on the real Redis broker; its tasks see the
    test database, so use it with django_db(transaction=True)."""
    from celery.contrib.testing.worker import start_worker

    from livermore.celery import app

    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        yield
