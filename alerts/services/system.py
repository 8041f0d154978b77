"""System notifications: system events (kernel.sysevents) routed per kind to a channel and queued in
the alerts outbox, grouped so that a burst of one kind is one message."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts.models import Notification, SystemEventRoute, SystemNotice, SystemNoticeItem
from kernel.sysevents import SystemEvent, SystemEventKind, system_event_emit

from .channels import system_webhook_url

log = logging.getLogger(__name__)

# Items kept in one grouped message (Discord's embed description holds 4096 characters).
NOTICE_ITEMS_MAX = 40


def system_event_record(*, event: SystemEvent) -> Notification | None:
    """Queues the event for its kind's channel (a kind without a route: the system webhook,
    SYSTEM_NOTIFICATION_WEBHOOK_URL, when set): added to the message of that kind and channel still
    waiting to be sent, else a new message sent SYSTEM_NOTIFICATION_GROUP_S from now. Returns the
    outbox row, or None when the kind is silenced, or has no route and there is no system webhook."""
    kind = SystemEventKind(event["kind"])
    route = SystemEventRoute.objects.select_related("channel").filter(kind=kind).first()
    channel = route.channel if route is not None else None
    if (route is None and not system_webhook_url()) or (
        route is not None and (route.silenced or channel is None or not channel.enabled)
    ):
        log.debug("system event %s subject=%s not routed", kind.value, event["subject"])
        return None
    item = SystemNoticeItem(subject=event["subject"], text=event["text"], at=event["at"])
    now = timezone.now()
    with transaction.atomic():
        # The delivery worker locks the same row while it sends (and skips it while it is locked
        # here), so an item is either in the message that goes out or starts the next one.
        waiting = (
            Notification.objects.select_for_update(of=("self",))
            .select_related("system_notice")
            .filter(
                channel=channel,
                system_notice__kind=kind,
                status=Notification.Status.PENDING,
                attempts=0,
                rate_limited=0,
                next_attempt_at__gt=now,
            )
            .order_by("-created_at")
            .first()
        )
        if waiting is not None and waiting.system_notice is not None:
            notice = waiting.system_notice
            if len(notice.items) < NOTICE_ITEMS_MAX:
                notice.items = [*notice.items, item]
                notice.save(update_fields=["items"])
                return waiting
        notice = SystemNotice.objects.create(kind=kind, items=[item], created_at=now)
        delay = settings.SYSTEM_NOTIFICATION_GROUP_S
        notification = Notification.objects.create(
            system_notice=notice,
            channel=channel,
            next_attempt_at=now + timedelta(seconds=delay),
            created_at=now,
        )
        from alerts.tasks import notification_deliver

        transaction.on_commit(lambda: notification_deliver.apply_async((notification.pk,), countdown=delay))
    return notification


def dead_letters_check(*, since_hours: int = 24) -> int:
    """Raises `outbox.dead_letters` when more outbox rows failed in the last `since_hours` than
    SYSTEM_NOTIFICATION_DEAD_LETTERS_MAX. Returns the count."""
    count = Notification.objects.filter(
        status=Notification.Status.FAILED, created_at__gte=timezone.now() - timedelta(hours=since_hours)
    ).count()
    if count > settings.SYSTEM_NOTIFICATION_DEAD_LETTERS_MAX:
        system_event_emit(
            SystemEventKind.DEAD_LETTERS,
            subject="outbox",
            text=f"{count} notification(s) failed in the last {since_hours} h",
        )
    return count
