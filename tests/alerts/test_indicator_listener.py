from collections.abc import Iterator
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string

from alerts.models import IndicatorValue
from livermore.celery import app
from marketdata.bars import Bar
from tests.alerts.candle_factory import bar_start, epoch, make_ramp
from tests.support.instruments import make_instrument
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker() -> Iterator[None]:
    """A real Celery worker (solo pool, in a thread) on the configured Redis broker."""
    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield
    close_old_connections()


def closed_bar(i: int) -> Bar:
    return Bar(
        "EURUSD", "1m", epoch(i), Decimal(100 + i), Decimal(101 + i), Decimal(99 + i), Decimal(100 + i)
    )


def test_the_listener_is_registered_for_candle_closes() -> None:
    assert "alerts.listeners.on_candle_close" in settings.CANDLE_LISTENERS


@pytest.mark.usefixtures("worker")
def test_a_closed_candle_gets_its_indicators_computed_by_a_worker() -> None:
    make_ramp(make_instrument(), 40)
    for path in settings.CANDLE_LISTENERS:
        import_string(path)(closed_bar(39))
    wait_until(lambda: IndicatorValue.objects.filter(name="macdv", start=bar_start(39)).exists())
    assert str(IndicatorValue.objects.get(name="macdv", start=bar_start(39)).value) == "350.0000000000"
