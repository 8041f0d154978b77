from collections.abc import Iterator
from decimal import Decimal

import pytest
from pytest_django import Settings

from alerts import indicators
from alerts.models import AlertRule, NotificationChannel
from kernel.redis import key, sync_client
from marketdata.demo import demo_seed
from marketdata.models import Instrument
from tests.fakes.discord import FakeDiscord
from users.models import User

BAR = 1_767_225_600  # 2026-01-01 00:00 UTC, aligned to every timeframe


@pytest.fixture(scope="module", params=["by length", "blocked"])
def recursions(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's indicator tests both ways: as in production (long histories run the recursions in
    blocks, short ones in lfilter) and with every length run in blocks (indicators._filter_blocked).
    Module-scoped (not monkeypatch) so that hypothesis tests can use it."""
    threshold = indicators._BLOCKED_FROM
    if request.param == "blocked":
        indicators._BLOCKED_FROM = 0
    yield request.param
    indicators._BLOCKED_FROM = threshold


@pytest.fixture
def instruments(db: None) -> None:
    demo_seed()


@pytest.fixture
def btc(instruments: None) -> Instrument:
    return Instrument.objects.get(symbol="BTCUSD")


@pytest.fixture
def discord() -> Iterator[FakeDiscord]:
    with FakeDiscord(bucket_limit=50, bucket_window_s=1.0) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _local_webhooks(settings: Settings) -> Iterator[None]:
    """Lets channels point at the local fake; clears rate-limit blocks between tests."""
    settings.ALERTS_WEBHOOK_HOSTS = [*settings.ALERTS_WEBHOOK_HOSTS, "127.0.0.1"]
    yield
    redis = sync_client()
    for name in redis.scan_iter(key("alerts", "*")):
        redis.delete(name)


def channel_for(user: User, discord: FakeDiscord) -> tuple[NotificationChannel, str]:
    webhook_id, url = discord.add_webhook()
    return NotificationChannel.objects.create(
        user=user, name=f"discord {webhook_id}", webhook_url=url
    ), webhook_id


def macdv_rule(user: User, instrument: Instrument, timeframe: str = "5m") -> AlertRule:
    return AlertRule.objects.create(user=user, instrument=instrument, timeframe=timeframe, kind="macdv")


def bar_values(
    macdv: float, *, signal: float | None = None, hist: float | None = None, close: str = "95000"
) -> dict[str, Decimal | float]:
    signal = macdv if signal is None else signal
    return {
        "open": Decimal(close),
        "high": Decimal(close) + 50,
        "low": Decimal(close) - 50,
        "close": Decimal(close),
        "volume": Decimal("3.5"),
        "ema26": float(close) - 10,
        "macdv": macdv,
        "macdv_signal": signal,
        "macdv_histogram": macdv - signal if hist is None else hist,
    }
