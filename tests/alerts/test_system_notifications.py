"""System events routed per kind into the alerts outbox, grouped, and delivered to the local Discord fake."""

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from celery.signals import task_failure
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts.models import Notification, NotificationChannel, SystemEventRoute, SystemNotice
from alerts.services import NOTICE_ITEMS_MAX, dead_letters_check, notification_deliver, system_event_record
from alerts.tasks import notifications_requeue
from kernel.sysevents import SystemEvent, SystemEventKind, system_event_emit
from tests.fakes.discord import FakeDiscord

from .conftest import channel_for

pytestmark = pytest.mark.django_db

AT = datetime(2026, 12, 2, 9, 30, tzinfo=UTC).isoformat()


def event(kind: SystemEventKind, subject: str, text: str = "connection silent for 2500 ms") -> SystemEvent:
    return SystemEvent(kind=kind.value, subject=subject, text=text, at=AT)


def route(kind: SystemEventKind, channel: NotificationChannel | None) -> None:
    SystemEventRoute.objects.create(kind=kind, channel=channel, silenced=channel is None)


@pytest.fixture(autouse=True)
def _short_window(settings: Any) -> None:
    settings.SYSTEM_NOTIFICATION_GROUP_S = 30.0


def test_a_kind_without_a_route_or_silenced_queues_nothing(alice: Any, discord: FakeDiscord) -> None:
    route(SystemEventKind.VENUE_UP, None)
    assert system_event_record(event=event(SystemEventKind.VENUE_DOWN, "coinbase")) is None
    assert system_event_record(event=event(SystemEventKind.VENUE_UP, "coinbase")) is None
    assert not Notification.objects.exists() and not SystemNotice.objects.exists()


def test_a_burst_of_one_kind_goes_out_as_one_message(alice: Any, discord: FakeDiscord) -> None:
    channel, webhook_id = channel_for(alice, discord)
    route(SystemEventKind.VENUE_DOWN, channel)
    rows = {system_event_record(event=event(SystemEventKind.VENUE_DOWN, f"venue{n}")) for n in range(20)}
    (notification,) = rows
    assert notification is not None
    assert 0 < (notification_deliver(notification_id=notification.pk) or 0) <= 30  # waits for more
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())  # window over
    assert notification_deliver(notification_id=notification.pk) is None

    notification.refresh_from_db()
    assert notification.status == "sent"
    (received,) = discord.posted(webhook_id)
    (embed,) = received.payload["embeds"]
    assert embed["title"] == "Venue down: 20 events"
    assert embed["description"].splitlines()[0] == "venue0: connection silent for 2500 ms"
    assert len(embed["description"].splitlines()) == 20
    assert embed["color"] == 0xE74C3C

    # After the message went out, the next event starts a new one.
    after = system_event_record(event=event(SystemEventKind.VENUE_DOWN, "oanda"))
    assert after is not None and after.pk != notification.pk
    assert after.system_notice is not None and after.system_notice.title == "Venue down: oanda"


def test_kinds_group_separately_and_go_to_their_own_channels(alice: Any, discord: FakeDiscord) -> None:
    venues, _ = channel_for(alice, discord)
    desk, _ = channel_for(alice, discord)
    route(SystemEventKind.VENUE_DOWN, venues)
    route(SystemEventKind.VENUE_UP, venues)
    route(SystemEventKind.STOP_OUT, desk)
    down = system_event_record(event=event(SystemEventKind.VENUE_DOWN, "coinbase"))
    up = system_event_record(event=event(SystemEventKind.VENUE_UP, "binance", "connection live again"))
    stop = system_event_record(event=event(SystemEventKind.STOP_OUT, "account 1001", "position #7 closed"))
    assert down and up and stop and len({down.pk, up.pk, stop.pk}) == 3
    assert (down.channel, up.channel, stop.channel) == (venues, venues, desk)


def test_a_full_message_starts_the_next_one(alice: Any, discord: FakeDiscord) -> None:
    channel, _ = channel_for(alice, discord)
    route(SystemEventKind.TASK_FAILURE, channel)
    rows = [
        system_event_record(event=event(SystemEventKind.TASK_FAILURE, f"task{n}", "ValueError"))
        for n in range(NOTICE_ITEMS_MAX + 1)
    ]
    assert len({row.pk for row in rows if row}) == 2
    assert sorted(len(n.items) for n in SystemNotice.objects.all()) == [1, NOTICE_ITEMS_MAX]


def test_an_event_that_arrives_while_its_message_is_being_sent_starts_the_next_one(
    alice: Any, discord: FakeDiscord
) -> None:
    channel, _ = channel_for(alice, discord)
    route(SystemEventKind.FIX_LOGOUT, channel)
    first = system_event_record(event=event(SystemEventKind.FIX_LOGOUT, "LP1"))
    assert first is not None
    Notification.objects.filter(pk=first.pk).update(attempts=1)  # a send was tried: the text is out
    second = system_event_record(event=event(SystemEventKind.FIX_LOGOUT, "LP2"))
    assert second is not None and second.pk != first.pk


def test_the_emit_hook_reaches_the_outbox_through_a_worker_task(
    settings: Any, alice: Any, discord: FakeDiscord
) -> None:
    channel, _ = channel_for(alice, discord)
    route(SystemEventKind.FIX_LOGON_REFUSED, channel)
    settings.SYSTEM_EVENT_LISTENERS = ["alerts.listeners.on_system_event"]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from livermore.celery import app

    app.conf.task_always_eager = True
    try:
        system_event_emit(SystemEventKind.FIX_LOGON_REFUSED, subject="LP1", text="refused: bad password")
    finally:
        app.conf.task_always_eager = False
    (notice,) = SystemNotice.objects.all()
    assert notice.items[0]["subject"] == "LP1" and notice.items[0]["text"] == "refused: bad password"


def test_a_failing_listener_does_not_reach_the_caller(
    settings: Any, system_events: list[SystemEvent]
) -> None:
    settings.SYSTEM_EVENT_LISTENERS = ["tests.support.sysevents.fail", "tests.support.sysevents.record"]
    system_event_emit(SystemEventKind.PROCESS_START, subject="worker@host", text="started")
    assert [e["kind"] for e in system_events] == ["process.start"]


def test_a_failed_task_is_a_system_event_with_its_exception_type_only(
    system_events: list[SystemEvent],
) -> None:
    task_failure.send(
        sender=notifications_requeue, exception=ValueError("https://discord.com/api/webhooks/1/t")
    )
    (failure,) = system_events
    assert (failure["kind"], failure["subject"], failure["text"]) == (
        "task.failure",
        "alerts.tasks.notifications_requeue",
        "ValueError",
    )


def test_failed_rows_past_the_limit_raise_a_dead_letter_event(
    alice: Any, discord: FakeDiscord, system_events: list[SystemEvent]
) -> None:
    channel, _ = channel_for(alice, discord)
    route(SystemEventKind.VENUE_DOWN, channel)
    assert dead_letters_check() == 0 and system_events == []
    row = system_event_record(event=event(SystemEventKind.VENUE_DOWN, "coinbase"))
    assert row is not None
    Notification.objects.filter(pk=row.pk).update(status=Notification.Status.FAILED)
    assert dead_letters_check() == 1
    assert [(e["kind"], e["text"]) for e in system_events] == [
        ("outbox.dead_letters", "1 notification(s) failed in the last 24 h")
    ]


def test_the_admin_routes_a_kind_and_lists_system_notices(
    operator: Any, alice: Any, client: Client, discord: FakeDiscord
) -> None:
    channel, _ = channel_for(alice, discord)
    client.force_login(operator)
    response = client.post(
        reverse("admin:alerts_systemeventroute_add"),
        {"kind": SystemEventKind.MARGIN_CALL.value, "channel": channel.pk},
    )
    assert response.status_code == 302
    assert SystemEventRoute.objects.get(kind="account.margin_call").channel == channel
    refused = client.post(reverse("admin:alerts_systemeventroute_add"), {"kind": "venue.up"})
    assert refused.status_code == 200 and not SystemEventRoute.objects.filter(kind="venue.up").exists()

    system_event_record(event=event(SystemEventKind.MARGIN_CALL, "account 1001", "margin level 80%"))
    page = client.get(reverse("admin:alerts_notification_changelist"))
    assert page.status_code == 200 and b"Margin call: account 1001" in page.content
    assert client.get(reverse("admin:alerts_systemnotice_changelist")).status_code == 200


def test_a_user_without_the_route_permission_cannot_change_routes(alice: Any, client: Client) -> None:
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    assert client.get(reverse("admin:alerts_systemeventroute_changelist")).status_code == 403


def test_a_kind_without_a_route_goes_to_the_system_webhook(
    settings: Any, alice: Any, discord: FakeDiscord
) -> None:
    webhook_id, settings.SYSTEM_NOTIFICATION_WEBHOOK_URL = discord.add_webhook()
    channel, routed_id = channel_for(alice, discord)
    route(SystemEventKind.STOP_OUT, channel)
    route(SystemEventKind.VENUE_UP, None)
    assert system_event_record(event=event(SystemEventKind.VENUE_UP, "coinbase")) is None  # silenced
    routed = system_event_record(event=event(SystemEventKind.STOP_OUT, "account 1001", "position #7 closed"))
    first = system_event_record(event=event(SystemEventKind.VENUE_DOWN, "coinbase"))
    second = system_event_record(event=event(SystemEventKind.VENUE_DOWN, "oanda"))
    assert routed and first and routed.channel == channel
    assert first == second and first.channel is None
    Notification.objects.update(next_attempt_at=timezone.now())
    assert notification_deliver(notification_id=first.pk) is None
    assert notification_deliver(notification_id=routed.pk) is None

    (received,) = discord.posted(webhook_id)
    assert received.payload["embeds"][0]["title"] == "Venue down: 2 events"
    assert [r.payload["embeds"][0]["title"] for r in discord.posted(routed_id)] == ["Stop-out: account 1001"]
    first.refresh_from_db()
    assert first.status == "sent"


def test_a_system_webhook_discord_refuses_fails_its_rows_and_disables_nothing(
    settings: Any, alice: Any, discord: FakeDiscord
) -> None:
    _, url = discord.add_webhook()
    settings.SYSTEM_NOTIFICATION_WEBHOOK_URL = url.replace("/webhooks/", "/webhooks/9")  # unknown to Discord
    channel, _ = channel_for(alice, discord)
    notification = system_event_record(event=event(SystemEventKind.VENUE_DOWN, "coinbase"))
    assert notification is not None
    Notification.objects.update(next_attempt_at=timezone.now())
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    assert notification.status == "failed" and "404" in notification.last_error
    channel.refresh_from_db()
    assert channel.enabled


def test_a_system_webhook_that_is_not_discords_is_ignored_and_never_logged(
    settings: Any, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_urlsafe(24)
    settings.SYSTEM_NOTIFICATION_WEBHOOK_URL = f"https://hooks.evil.example/api/webhooks/1/{token}"
    with caplog.at_level(logging.DEBUG):
        assert system_event_record(event=event(SystemEventKind.VENUE_DOWN, "coinbase")) is None
    assert "SYSTEM_NOTIFICATION_WEBHOOK_URL ignored: Must be a Discord webhook URL" in caplog.text
    assert token not in caplog.text
    assert not Notification.objects.exists()

    with pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert "SYSTEM_NOTIFICATION_WEBHOOK_URL: Must be a Discord webhook URL" in str(caught.value)
    assert token not in str(caught.value)
