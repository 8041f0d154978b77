"""Delivering the outbox to the local Discord fake over a real socket, one call at a time."""

import io
import logging
import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from alerts.models import AlertEvent, AlertRule, AlertSeriesState, Notification, NotificationChannel
from alerts.services import alerts_evaluate_bar_close, notification_deliver, notifications_requeue_due
from kernel.redis import key, sync_client
from marketdata.models import Instrument
from tests.fakes.discord import FakeDiscord, PostedLate, RateLimited, Slow, Status

from .conftest import BAR, bar_values, channel_for, macdv_rule

pytestmark = pytest.mark.django_db


def fire(
    user: Any, instrument: Instrument, discord: FakeDiscord, *, bars: int = 2, rules: int = 1
) -> tuple[Notification, str]:
    """A MACD-V crossing below -150 on BTCUSD 5m (after `bars` - 1 bars of history) seen by `rules`
    rules; the first outbox row."""
    channel, webhook_id = channel_for(user, discord)
    for _ in range(rules):
        macdv_rule(user, instrument)
    for i in range(bars):
        value = -160.0 if i == bars - 1 else -100.0 + i % 7
        alerts_evaluate_bar_close(
            symbol="BTCUSD", timeframe="5m", bar_start=BAR + i * 300, values=bar_values(value)
        )
    return Notification.objects.filter(channel=channel).order_by("pk")[0], webhook_id


def test_it_posts_the_embed_with_the_chart_as_multipart(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    notification, webhook_id = fire(alice, btc, discord, bars=40)
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 1)
    assert notification.message_id and notification.sent_at
    assert [a["outcome"] for a in notification.attempt_log] == [
        "posted"
    ] and not notification.maybe_duplicated

    (received,) = discord.posted(webhook_id)
    assert received.wait and received.content_type.startswith("multipart/form-data")
    (embed,) = received.payload["embeds"]
    assert embed["title"] == "BTCUSD: MACD-V crossed below -150 (5m)"
    assert embed["color"] == 0xE74C3C
    assert embed["image"] == {"url": "attachment://chart.png"}
    assert received.payload["attachments"] == [{"id": 0, "filename": "chart.png"}]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["MACD-V"] == "-160.00" and fields["Price"] == "95,000.00" and fields["Bias"] == "Bullish"
    assert fields["MACD-V 5m"] == "-160.00 (oversold)" and fields["MACD-V 1d"] == "n/a"
    assert fields["Liquidity 5m"] == "n/a"  # these bars came without diagnostics
    assert [k for k in fields if k.startswith("MACD-V ")] == [
        f"MACD-V {tf}" for tf in ("1m", "5m", "15m", "1h", "4h", "1d")
    ]
    assert embed["timestamp"].endswith("+00:00")
    assert embed["footer"]["text"] == f"Livermore alert #{notification.event_id}"
    (upload,) = received.files
    assert (upload.name, upload.filename, upload.content_type) == ("files[0]", "chart.png", "image/png")
    assert Image.open(io.BytesIO(upload.data)).size == (800, 500)


def test_the_embed_shows_each_timeframes_stage_and_the_liquidity_of_its_own(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    channel, webhook_id = channel_for(alice, discord)
    macdv_rule(alice, btc, "1h")
    AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1m", condition="greater_than", threshold=Decimal(90000)
    )
    diagnostics = {"macdv_n_eff": Decimal(200), "macdv_span": Decimal(260)}  # 60 gaps in 260: 23%
    alerts_evaluate_bar_close(
        symbol="BTCUSD", timeframe="5m", bar_start=BAR, values=bar_values(20.0, signal=10.0)
    )
    alerts_evaluate_bar_close(
        symbol="BTCUSD", timeframe="1h", bar_start=BAR, values=bar_values(140.0) | diagnostics
    )
    alerts_evaluate_bar_close(
        symbol="BTCUSD",
        timeframe="1h",
        bar_start=BAR + 3600,
        values=bar_values(160.0, signal=150.0) | diagnostics,
    )
    # A price rule on 1m, whose MACD-V is not seeded yet: its bar carries diagnostics, no MACD-V.
    unseeded = {k: v for k, v in bar_values(0.0).items() if not k.startswith("macdv")}
    alerts_evaluate_bar_close(
        symbol="BTCUSD",
        timeframe="1m",
        bar_start=BAR + 7200,
        values=unseeded | {"macdv_n_eff": Decimal(20), "macdv_span": Decimal(45)},
    )
    for notification in Notification.objects.filter(channel=channel).order_by("pk"):
        assert notification_deliver(notification_id=notification.pk) is None
    macdv_alert, price_alert = (
        {f["name"]: f["value"] for f in r.payload["embeds"][0]["fields"]} for r in discord.posted(webhook_id)
    )
    assert macdv_alert["MACD-V 1h"] == "160.00 (overbought)"
    assert macdv_alert["MACD-V 5m"] == "20.00 (rebounding)"
    assert macdv_alert["Bias"] == "Bearish"  # overbought 1h (4) against rebounding 5m (2)
    assert macdv_alert["Liquidity 1h"] == "medium (nEff 200, span 260)"
    assert price_alert["Liquidity 1m"] == "Low trading activity"
    assert price_alert["MACD-V 1m"] == "n/a"
    event = AlertEvent.objects.get(timeframe="1h")
    assert event.payload["diagnostics"] == {
        "n_eff": 200, "span": 260, "gap_ratio": 60 / 260, "liquidity": "medium"
    }  # fmt: skip
    assert AlertEvent.objects.get(timeframe="1m").payload["diagnostics"] == {
        "n_eff": 20, "span": 45, "gap_ratio": 25 / 45, "liquidity": "low"
    }  # fmt: skip


def test_a_chart_failure_sends_the_alert_without_the_image(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    notification, webhook_id = fire(alice, btc, discord)
    AlertSeriesState.objects.filter(symbol="BTCUSD", timeframe="5m").update(
        history={"starts": [BAR], "history": {"close": ["not a number"]}}
    )
    assert notification_deliver(notification_id=notification.pk) is None
    (received,) = discord.posted(webhook_id)
    assert received.content_type == "application/json" and received.files == []
    assert "image" not in received.payload["embeds"][0]


def test_a_429_waits_retry_after_and_holds_the_channel(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    notification, webhook_id = fire(alice, btc, discord)
    discord.script(webhook_id, RateLimited(0.4))
    retry_in = notification_deliver(notification_id=notification.pk)
    assert retry_in == pytest.approx(0.4, abs=0.05)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("pending", 0)
    assert "429" in notification.last_error

    assert 0 < notification_deliver(notification_id=notification.pk) <= 0.4  # type: ignore[operator]
    assert len(discord.received) == 1  # no request while rate limited
    time.sleep(0.45)
    assert notification_deliver(notification_id=notification.pk) is None
    assert len(discord.posted(webhook_id)) == 1


def test_remaining_zero_holds_the_channel_until_reset_after(alice: Any, btc: Instrument) -> None:
    with FakeDiscord(bucket_limit=1, bucket_window_s=1.0) as discord:
        first, _ = fire(alice, btc, discord, rules=2)
        second = Notification.objects.exclude(pk=first.pk).get()
        assert notification_deliver(notification_id=first.pk) is None
        assert discord.received[-1].status == 200
        waited = notification_deliver(notification_id=second.pk)
        assert waited is not None and 0 < waited <= 1.0
        assert len(discord.received) == 1  # held back instead of earning a 429
        time.sleep(waited + 0.05)
        assert notification_deliver(notification_id=second.pk) is None
        assert [r.status for r in discord.received] == [200, 200]


def test_5xx_and_timeouts_back_off_then_fail_at_the_attempt_limit(
    alice: Any, btc: Instrument, discord: FakeDiscord, settings: Any
) -> None:
    settings.ALERTS_DELIVERY_MAX_ATTEMPTS = 3
    settings.ALERTS_DELIVERY_BACKOFF_S = 0.05
    settings.ALERTS_DISCORD_TIMEOUT_S = 0.3
    notification, webhook_id = fire(alice, btc, discord)
    discord.script(webhook_id, Status(500), Slow(1.0), Status(503))
    assert notification_deliver(notification_id=notification.pk) == pytest.approx(0.05)
    time.sleep(0.06)
    assert notification_deliver(notification_id=notification.pk) == pytest.approx(0.1)
    notification.refresh_from_db()
    assert "timeout" in notification.last_error
    time.sleep(0.11)
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    assert notification.status == "failed" and notification.attempts == 3
    assert notification.last_error.startswith("gave up after 3 attempts: HTTP 503")
    assert discord.posted() == []


def test_an_unknown_webhook_fails_at_once_and_disables_the_channel(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    notification, webhook_id = fire(alice, btc, discord, rules=2)
    discord.delete_webhook(webhook_id)
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    assert notification.status == "failed" and "10015" in notification.last_error
    channel = NotificationChannel.objects.get(pk=notification.channel_id)
    assert not channel.enabled and "Unknown Webhook" in channel.disabled_reason

    later = Notification.objects.exclude(pk=notification.pk).get()
    assert notification_deliver(notification_id=later.pk) is None
    later.refresh_from_db()
    assert later.status == "failed" and later.last_error.startswith("channel disabled")
    assert len(discord.received) == 1  # a dead webhook is not hit again


def test_an_invalid_body_fails_without_retrying(alice: Any, btc: Instrument, discord: FakeDiscord) -> None:
    notification, _ = fire(alice, btc, discord)
    AlertEvent.objects.filter(pk=notification.event_id).update(payload={"bias": "x" * 1100})
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    assert notification.status == "failed" and "50035" in notification.last_error


def test_the_webhook_token_never_reaches_a_log_line_or_a_stored_error(
    alice: Any, btc: Instrument, discord: FakeDiscord, settings: Any, caplog: Any
) -> None:
    settings.ALERTS_DISCORD_TIMEOUT_S = 0.2
    notification, webhook_id = fire(alice, btc, discord)
    token = discord.webhooks[webhook_id]
    discord.script(webhook_id, Slow(0.5), Status(500))
    errors = []
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            notification_deliver(notification_id=notification.pk)
            notification.refresh_from_db()
            errors.append(notification.last_error)
            Notification.objects.filter(pk=notification.pk).update(next_attempt_at=notification.created_at)
    assert errors[:2] == ["timeout after 0.2s", "HTTP 500: Internal Server Error"]
    assert notification.status == "sent"
    assert "discord channel=" in caplog.text
    assert token not in caplog.text  # the id is no secret (Discord echoes it in X-RateLimit-Bucket)


@pytest.mark.django_db(transaction=True)
def test_a_row_another_worker_is_sending_is_skipped(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    notification, _ = fire(alice, btc, discord)
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        with transaction.atomic():
            Notification.objects.select_for_update().get(pk=notification.pk)
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert locked.wait(10)
        assert notification_deliver(notification_id=notification.pk) is None
        assert discord.received == []
    finally:
        release.set()
        thread.join()
    assert Notification.objects.get(pk=notification.pk).status == "pending"


def test_the_admin_retries_a_failed_notification(
    admin_client: Any, alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    notification, _ = fire(alice, btc, discord)
    Notification.objects.filter(pk=notification.pk).update(status="failed", attempts=8, last_error="HTTP 500")
    response = admin_client.post(
        reverse("admin:alerts_notification_changelist"),
        {"action": "retry", "_selected_action": [notification.pk]},
        follow=True,
    )
    assert "1 notification(s) queued for delivery." in response.content.decode()
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("pending", 0)
    assert notification_deliver(notification_id=notification.pk) is None
    assert Notification.objects.get(pk=notification.pk).status == "sent"


def test_prices_are_formatted_by_magnitude() -> None:
    from alerts.discord import format_price

    assert format_price(Decimal("95123.456")) == "95,123.46"
    assert format_price(Decimal("1.085")) == "1.09"
    assert format_price(Decimal("0.000123456789")) == "0.000123"
    assert format_price(Decimal("0.5")) == "0.5000"


def test_a_global_429_holds_every_channel(alice: Any, btc: Instrument, discord: FakeDiscord) -> None:
    first, webhook_id = fire(alice, btc, discord)
    other_channel, _ = channel_for(alice, discord)
    other = Notification.objects.create(event=first.event, channel=other_channel)
    discord.script(webhook_id, RateLimited(0.5, is_global=True))
    assert notification_deliver(notification_id=first.pk) == pytest.approx(0.5, abs=0.05)
    held = notification_deliver(notification_id=other.pk)
    assert held is not None and 0 < held <= 0.5
    assert len(discord.received) == 1


def deliver_until_settled(notification: Notification, *, calls: int = 10) -> None:
    for _ in range(calls):
        if notification_deliver(notification_id=notification.pk) is None:
            return
        time.sleep(0.03)


def test_repeated_429s_end_in_failed_after_the_limit(
    alice: Any, btc: Instrument, discord: FakeDiscord, settings: Any
) -> None:
    settings.ALERTS_DELIVERY_MAX_RATE_LIMITED = 3
    notification, webhook_id = fire(alice, btc, discord)
    discord.script(webhook_id, *[RateLimited(0.01)] * 3)
    deliver_until_settled(notification)
    notification.refresh_from_db()
    assert (notification.status, notification.rate_limited, notification.attempts) == ("failed", 3, 0)
    assert notification.last_error.startswith("gave up after 3 rate-limited answers: HTTP 429")
    assert [a["outcome"] for a in notification.attempt_log] == ["rate_limited"] * 3
    assert discord.posted() == [] and len(discord.received) == 3


def test_invalid_requests_near_discords_ban_limit_hold_every_channel(
    alice: Any, btc: Instrument, discord: FakeDiscord, settings: Any, caplog: Any
) -> None:
    settings.ALERTS_DISCORD_INVALID_LIMIT = 3
    first, webhook_id = fire(alice, btc, discord)
    other_channel, other_webhook = channel_for(alice, discord)
    other = Notification.objects.create(event=first.event, channel=other_channel)
    held = key("alerts", "discord-blocked", "global")
    discord.script(webhook_id, *[RateLimited(0.01, scope="shared")] * 2, *[RateLimited(0.01)] * 3)
    for _ in range(4):  # two shared 429s (not counted by Discord), two counted
        notification_deliver(notification_id=first.pk)
        time.sleep(0.03)
    assert not sync_client().exists(held)
    with caplog.at_level(logging.ERROR):
        notification_deliver(notification_id=first.pk)  # the third counted one
    assert "holding every channel" in caplog.text
    waited = notification_deliver(notification_id=other.pk)
    assert waited is not None and waited > 500  # held for the 10-minute window
    assert len(discord.received) == 5 and discord.posted(other_webhook) == []
    Notification.objects.filter(pk=other.pk).update(next_attempt_at=timezone.now())
    assert notification_deliver(notification_id=other.pk) is not None  # still held


def test_a_request_that_timed_out_after_posting_is_retried_and_marked_as_a_possible_duplicate(
    alice: Any, btc: Instrument, discord: FakeDiscord, settings: Any
) -> None:
    settings.ALERTS_DISCORD_TIMEOUT_S = 0.3
    settings.ALERTS_DELIVERY_BACKOFF_S = 0.05
    notification, webhook_id = fire(alice, btc, discord)
    discord.script(webhook_id, PostedLate(0.6))
    assert notification_deliver(notification_id=notification.pk) == pytest.approx(0.05)
    notification.refresh_from_db()
    assert notification.status == "pending" and notification.attempt_log[0]["outcome"] == "unknown"
    time.sleep(0.06)
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    first, second = discord.posted(webhook_id)  # at least once: Discord shows it twice
    assert first.message_id != second.message_id
    assert notification.status == "sent" and notification.message_id == second.message_id
    assert [(a["outcome"], a["message_id"]) for a in notification.attempt_log] == [
        ("unknown", ""),
        ("posted", second.message_id),
    ]
    assert notification.maybe_duplicated


@pytest.mark.django_db(transaction=True)
def test_the_attempt_is_committed_before_the_request_goes_out_and_holds_the_row(
    alice: Any, btc: Instrument, discord: FakeDiscord, settings: Any
) -> None:
    """While a request is in flight its claim is in the database (another connection sees it) and a
    second worker does not send the row; once answered, the claim is cleared."""
    settings.ALERTS_DISCORD_TIMEOUT_S = 5
    notification, webhook_id = fire(alice, btc, discord)
    discord.script(webhook_id, PostedLate(1.0))  # posted, answered a second later

    def deliver_and_close() -> None:
        try:
            notification_deliver(notification_id=notification.pk)
        finally:
            connection.close()  # this thread's own

    first = threading.Thread(target=deliver_and_close)
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not discord.received:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        claimed = Notification.objects.get(pk=notification.pk)  # this test's own connection
        assert claimed.status == "pending" and claimed.in_flight_until is not None
        wait = notification_deliver(notification_id=notification.pk)  # a redelivered task
        assert wait is not None and 0 < wait <= 5 + 5
    finally:
        first.join(10)
    sent = Notification.objects.get(pk=notification.pk)
    assert sent.status == "sent" and sent.in_flight_until is None and not sent.maybe_duplicated
    assert len(discord.received) == 1


@pytest.mark.django_db(transaction=True)
def test_a_claim_left_by_a_worker_killed_mid_request_is_redelivered_and_flagged(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    """What a worker SIGKILLed during its request leaves: a committed claim nobody settles. Once it
    ran out the requeue job sends the row again at once (no grace) and the row is flagged."""
    notification, webhook_id = fire(alice, btc, discord)
    ran_out = timezone.now() - timedelta(seconds=1)
    Notification.objects.filter(pk=notification.pk).update(in_flight_until=ran_out)
    assert notifications_requeue_due(grace_s=3600) == 1  # due by its claim, not by the grace
    assert notification_deliver(notification_id=notification.pk) is None
    sent = Notification.objects.get(pk=notification.pk)
    assert sent.status == "sent" and sent.maybe_duplicated
    assert [e["outcome"] for e in sent.attempt_log] == ["unknown", "posted"]
    assert sent.attempts == 2
    assert len(discord.posted(webhook_id)) == 1
