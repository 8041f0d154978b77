"""The Discord outbox: delivering notification rows with their chart, honouring rate limits, retrying
with backoff, and requeueing rows whose task was lost."""

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from alerts import discord, rules
from alerts.charts import render_chart
from alerts.models import (
    AlertEvent,
    Notification,
    SystemNotice,
)
from alerts.selectors import chart_series
from kernel import metrics
from kernel.errors import ServiceError
from users.selectors import user_settings

from .channels import (
    SYSTEM_WEBHOOK_BUCKET,
    _block,
    _blocked_for,
    _disable_if_rejected,
    _posted,
    webhook_url_check,
)
from .evaluation import _epoch

log = logging.getLogger(__name__)

ATTEMPT_LOG_MAX = 50
IN_FLIGHT_MARGIN_S = 5.0
DELIVERY_FIELDS = (
    "in_flight_until",
    "status",
    "attempts",
    "rate_limited",
    "next_attempt_at",
    "last_error",
    "sent_at",
    "message_id",
    "attempt_log",
)


def notification_chart(*, event: AlertEvent) -> bytes | None:
    """The event's chart PNG from the series the engine evaluated, or None (the alert goes without)."""
    try:
        series = chart_series(symbol=event.symbol, timeframe=event.timeframe, until=_epoch(event.bar_start))
        if series is None:
            return None
        starts, data = series
        return render_chart(event.title, data, starts=starts)
    except Exception:
        log.exception("chart for alert event %s failed; sending without it", event.pk)
        return None


def _bucket(notification: Notification) -> int:
    """The rate-limit bucket the row is posted to: its channel's, or the system webhook's."""
    return SYSTEM_WEBHOOK_BUCKET if notification.channel_id is None else notification.channel_id


def _webhook_url(notification: Notification) -> str:
    channel = notification.channel
    return settings.SYSTEM_NOTIFICATION_WEBHOOK_URL.strip() if channel is None else channel.webhook_url


def _fail(notification: Notification, error: str) -> None:
    notification.status = Notification.Status.FAILED
    notification.last_error = error
    notification.save(update_fields=DELIVERY_FIELDS)
    log.warning("notification=%s failed: %s", notification.pk, error)


def notification_deliver(*, notification_id: int) -> float | None:
    """Sends one outbox row to its Discord webhook. Returns the seconds after which to call again
    (rate limited, or a retryable failure), or None when the row is settled or not ours to send.

    The row stays locked (FOR UPDATE SKIP LOCKED) while it is sent, so two workers never send it;
    a worker that finds it locked or already settled does nothing.

    Delivery is at least once, and at most once in the common case. A row is marked sent only on
    Discord's 200 with the message (?wait=true), whose id is stored; after that it is never sent
    again. A request that got no answer (a timeout or a broken connection after the body left), or
    a worker that died after the POST but before its commit, leaves the outcome unknown: the message
    may have been posted. Discord's webhook API has no idempotency key and no way to look a message
    up but by its id, so the policy is to retry such a row within its attempt budget and accept a
    possible duplicate in the channel rather than risk losing the alert. Every request is recorded
    in the row's `attempt_log` (outcome "unknown" for no answer), so `maybe_duplicated` tells which
    sent rows may show twice. 429s count toward ALERTS_DELIVERY_MAX_RATE_LIMITED, other failures
    toward ALERTS_DELIVERY_MAX_ATTEMPTS; past either, the row is marked failed with the error."""
    claimed = _delivery_claim(notification_id)
    if not isinstance(claimed, Notification):
        return claimed
    notification, bucket = claimed, _bucket(claimed)
    if notification.system_notice is not None:
        png = None
        embed = _system_embed(notification.system_notice)
    else:
        png, embed = _alert_embed(notification, zone=user_settings(user_id=_owner_id(notification)).zone)
    with httpx.Client() as client:
        result = discord.webhook_post(
            client,
            _webhook_url(notification),
            embed=embed,
            png=png,
            timeout_s=settings.ALERTS_DISCORD_TIMEOUT_S,
            log_ref=f"channel={notification.channel_id or 'system'} notification={notification.pk}",
        )
    _posted(bucket, result)
    with transaction.atomic():
        current = (
            Notification.objects.select_for_update(of=("self",))
            .select_related("channel")
            .get(pk=notification.pk)
        )
        if current.in_flight_until != notification.in_flight_until:
            # Our claim ran out and another worker sent the row again: keep its state, note ours.
            log.warning("notification=%s answered after its claim ran out: %s", current.pk, result.status)
            current.attempt_log = [*current.attempt_log, _attempt(result, timezone.now())][-ATTEMPT_LOG_MAX:]
            current.save(update_fields=["attempt_log"])
            return None
        current.in_flight_until = None
        return _settle(current, result)


def _delivery_claim(notification_id: int) -> Notification | float | None:
    """Claims a due row for one request and commits the claim before the request goes out: the row
    is then held by `in_flight_until` (no other worker sends it meanwhile), not by a lock across the
    request. A claim still set past its time is a worker that died mid-request: its request may have
    been posted, so it is logged with outcome "unknown" (the row is `maybe_duplicated` once sent)."""
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event", "channel", "system_notice")
            .filter(pk=notification_id, status=Notification.Status.PENDING)
            .first()
        )
        if notification is None:
            return None
        now = timezone.now()
        if notification.in_flight_until is not None:
            if notification.in_flight_until > now:
                return (notification.in_flight_until - now).total_seconds()
            orphan = discord.WebhookResult(
                status=0, error="worker stopped mid-request: the outcome is unknown"
            )
            notification.attempt_log = [
                *notification.attempt_log,
                _attempt(orphan, notification.in_flight_until),
            ]
            notification.in_flight_until = None
            notification.attempts += 1
            if notification.attempts >= settings.ALERTS_DELIVERY_MAX_ATTEMPTS:
                _fail(notification, f"gave up after {notification.attempts} attempts: {orphan.error}")
                return None
        if _quiet_held(notification, now):
            return None
        wait = (notification.next_attempt_at - now).total_seconds()
        if wait > 0:
            notification.save(update_fields=DELIVERY_FIELDS)
            return wait
        channel = notification.channel
        if channel is not None and not channel.enabled:
            _fail(notification, f"channel disabled: {channel.disabled_reason or 'by its owner'}")
            return None
        if (blocked := _blocked_for(_bucket(notification))) > 0:
            notification.next_attempt_at = now + timedelta(seconds=blocked)
            notification.save(update_fields=DELIVERY_FIELDS)
            return blocked
        try:
            webhook_url_check(_webhook_url(notification))
        except ServiceError as exc:
            _fail(notification, f"webhook URL rejected: {exc.message}")
            return None
        # The chart, the request and its timeout, with room to spare.
        notification.in_flight_until = now + timedelta(
            seconds=settings.ALERTS_DISCORD_TIMEOUT_S + IN_FLIGHT_MARGIN_S
        )
        notification.save(update_fields=DELIVERY_FIELDS)
        return notification


def _owner_id(notification: Notification) -> int:
    """An alert's owner: its channel's user (an alert always has a channel; only a system notice may
    go to the system webhook, the notification_channel_or_system_notice constraint)."""
    if notification.channel is None:
        raise ValueError(f"notification={notification.pk}: an alert without a channel")
    return notification.channel.user_id


def _quiet_held(notification: Notification, now: datetime) -> bool:
    """Whether an alert waits for its owner's quiet hours to end: then its row is due at their end
    and no task is scheduled for it (the requeue job sends it once due). System notices are the
    desk's and are never held."""
    if notification.event_id is None:
        return False
    until = user_settings(user_id=_owner_id(notification)).quiet_until(now)
    if until is None:
        return False
    if notification.next_attempt_at < until:
        notification.next_attempt_at = until
        notification.save(update_fields=DELIVERY_FIELDS)
        log.info("notification=%s held for quiet hours until %s", notification.pk, until.isoformat())
    return True


def _alert_embed(notification: Notification, *, zone: ZoneInfo) -> tuple[bytes | None, dict[str, Any]]:
    event = notification.event
    assert event is not None  # a row has an alert event or a system notice (a check constraint)
    png = notification_chart(event=event)
    embed = discord.alert_embed(
        title=event.title,
        value=event.value,
        value_name=event.payload.get("value_name", "Value"),
        price=event.price,
        timeframe=event.timeframe,
        frames=event.payload.get("frames", {}),
        stages=event.payload.get("stages", {}),
        bias=event.payload.get("bias", rules.NEUTRAL),
        diagnostics=event.payload.get("diagnostics"),
        direction=event.direction,
        fired_at=event.fired_at,
        bar_start=event.bar_start,
        zone=zone,
        footer=f"Livermore alert #{event.pk}",
        with_chart=png is not None,
    )
    return png, embed


def _system_embed(notice: SystemNotice) -> dict[str, Any]:
    return discord.system_embed(
        kind=notice.kind,
        title=notice.title,
        lines=[f"{item['subject']}: {item['text']}" for item in notice.items],
        at=notice.created_at,
        footer=f"Livermore system notice #{notice.pk}",
    )


def _attempt(result: discord.WebhookResult, at: datetime) -> dict[str, Any]:
    if result.ok:
        outcome = "posted"
    elif result.status == 0:
        outcome = "unknown"  # no answer: the message may have been posted
    elif result.status == 429:
        outcome = "rate_limited"
    else:
        outcome = "rejected"
    return {
        "at": at.isoformat(),
        "status": result.status,
        "outcome": outcome,
        "ms": round(result.elapsed_ms),
        "error": result.error,
        "message_id": result.message_id,
    }


def _settle(notification: Notification, result: discord.WebhookResult) -> float | None:
    now = timezone.now()
    attempt = _attempt(result, now)
    notification.attempt_log = [*notification.attempt_log, attempt][-ATTEMPT_LOG_MAX:]
    metrics.DELIVERIES.labels(outcome=attempt["outcome"]).inc()
    if result.ok:
        metrics.DELIVERY_LATENCY.observe((now - notification.created_at).total_seconds())
    if result.ok:
        notification.attempts += 1
        notification.status = Notification.Status.SENT
        notification.sent_at = now
        notification.message_id = result.message_id
        notification.last_error = ""
        notification.save(update_fields=DELIVERY_FIELDS)
        return None
    if result.status == 429:
        retry_after = result.retry_after or 1.0
        _block(None if result.is_global else _bucket(notification), retry_after)
        notification.rate_limited += 1
        if notification.rate_limited >= settings.ALERTS_DELIVERY_MAX_RATE_LIMITED:
            _fail(
                notification,
                f"gave up after {notification.rate_limited} rate-limited answers: {result.error}",
            )
            return None
        notification.next_attempt_at = now + timedelta(seconds=retry_after)
        notification.last_error = result.error
        notification.save(update_fields=DELIVERY_FIELDS)
        return retry_after
    notification.attempts += 1
    if notification.channel is not None and _disable_if_rejected(notification.channel, result):
        _fail(notification, result.error)
        return None
    if result.status and result.status < 500:
        _fail(notification, result.error)
        return None
    if notification.attempts >= settings.ALERTS_DELIVERY_MAX_ATTEMPTS:
        _fail(notification, f"gave up after {notification.attempts} attempts: {result.error}")
        return None
    delay = min(
        settings.ALERTS_DELIVERY_BACKOFF_S * 2 ** (notification.attempts - 1),
        settings.ALERTS_DELIVERY_BACKOFF_MAX_S,
    )
    notification.next_attempt_at = now + timedelta(seconds=delay)
    notification.last_error = result.error
    notification.save(update_fields=DELIVERY_FIELDS)
    return delay


def notification_retry(*, notification: Notification) -> Notification:
    """Operator action: send a failed (or stuck) row again, with a fresh attempt budget."""
    if notification.status == Notification.Status.SENT:
        raise ServiceError("already_sent", f"Notification #{notification.pk} was already sent.")
    with transaction.atomic():
        notification.status = Notification.Status.PENDING
        notification.attempts = notification.rate_limited = 0
        notification.next_attempt_at = timezone.now()
        notification.save(update_fields=["status", "attempts", "rate_limited", "next_attempt_at"])
        from alerts.tasks import notification_deliver

        notification_deliver.delay_on_commit(notification.pk)
    return notification


def notifications_requeue_due(*, grace_s: float | None = None) -> int:
    """Re-enqueues pending rows whose delivery is overdue by more than ALERTS_REQUEUE_GRACE_S (a task
    lost with a broker), and at once those whose in-flight claim ran out (a worker killed mid-request).
    Extra deliveries of a row are harmless: the row lock and its status decide."""
    from alerts.tasks import notification_deliver

    if grace_s is None:
        grace_s = settings.ALERTS_REQUEUE_GRACE_S
    now = timezone.now()
    due = list(
        Notification.objects.filter(
            Q(next_attempt_at__lte=now - timedelta(seconds=grace_s)) | Q(in_flight_until__lte=now),
            status=Notification.Status.PENDING,
        ).values_list("pk", flat=True)[:1000]
    )
    for pk in due:
        notification_deliver.delay(pk)
    return len(due)
