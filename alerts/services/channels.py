"""Notification channels: Discord webhooks checked, saved, deleted and tested, and what Discord tells
about them (rate-limit buckets, the invalid-request window, a webhook it refuses)."""

import ipaddress
import logging
import time
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.utils import timezone
from rest_framework import status

from alerts import discord
from alerts.models import NotificationChannel
from kernel.errors import ServiceError
from kernel.redis import key, sync_client
from users.selectors import user_settings

log = logging.getLogger(__name__)


def webhook_url_check(url: str) -> None:
    """Only Discord's webhook endpoints (the hosts in ALERTS_WEBHOOK_HOSTS), over HTTPS; plain HTTP only
    to a loopback host (a local fake). Keeps the worker from being pointed at arbitrary hosts."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018  raises on a malformed port
    except ValueError:
        invalid = "Not a valid URL."
        raise ServiceError(
            "invalid_webhook_url", invalid, fields={"webhook_url": [invalid]}, status_code=400
        ) from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    problem = None
    if host not in settings.ALERTS_WEBHOOK_HOSTS:
        problem = "Must be a Discord webhook URL (https://discord.com/api/webhooks/...)."
    elif parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        problem = "Must use https."
    elif not parts.path.startswith("/api/") or "/webhooks/" not in parts.path:
        problem = "Must be a webhook URL: .../api/webhooks/{id}/{token}."
    if problem:
        raise ServiceError("invalid_webhook_url", problem, fields={"webhook_url": [problem]}, status_code=400)


def system_webhook_url() -> str:
    """SYSTEM_NOTIFICATION_WEBHOOK_URL, where system events of a kind without a route go, or "" when it
    is unset or not a Discord webhook URL (that is logged, never the URL: it holds the webhook's token)."""
    url = settings.SYSTEM_NOTIFICATION_WEBHOOK_URL.strip()
    if not url:
        return ""
    try:
        webhook_url_check(url)
    except ServiceError as exc:
        log.error("SYSTEM_NOTIFICATION_WEBHOOK_URL ignored: %s", exc.message)
        return ""
    return url


def notification_channel_save(
    *, channel: NotificationChannel, webhook_url: str | None = None
) -> NotificationChannel:
    """Creates or updates a channel; a new webhook URL (validated) re-enables it."""
    if webhook_url is not None:
        webhook_url_check(webhook_url)
        channel.webhook_url = webhook_url.strip()
        channel.disabled_reason = ""
    elif channel.pk is None:
        raise ServiceError(
            "invalid",
            "A channel needs its webhook URL.",
            fields={"webhook_url": ["Required."]},
            status_code=400,
        )
    if channel.enabled:
        channel.disabled_reason = ""
    channel.save()
    return channel


def notification_channel_delete(*, channel: NotificationChannel) -> None:
    channel.delete()


def notification_channel_test(*, channel: NotificationChannel) -> str:
    """Sends a test message to the channel's webhook now, outside the outbox, so its owner sees the
    webhook works; returns Discord's message id. A webhook Discord refuses (401/403/404) disables
    the channel, as a refused delivery does; any other failure is reported and changes nothing."""
    webhook_url_check(channel.webhook_url)
    if (blocked := _blocked_for(channel.pk)) > 0:
        raise ServiceError(
            "rate_limited",
            f"Discord asked us to wait {blocked:.0f}s before posting to this channel again.",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        )
    embed = discord.test_embed(
        channel_name=channel.name, sent_at=timezone.now(), zone=user_settings(user_id=channel.user_id).zone
    )
    with httpx.Client() as client:
        result = discord.webhook_post(
            client,
            channel.webhook_url,
            embed=embed,
            png=None,
            timeout_s=settings.ALERTS_DISCORD_TIMEOUT_S,
            log_ref=f"channel={channel.pk} test",
        )
    _posted(channel.pk, result)
    if result.ok:
        return result.message_id
    if result.status == 429:
        _block(None if result.is_global else channel.pk, result.retry_after or 1.0)
    _disable_if_rejected(channel, result)
    raise ServiceError(
        "test_message_failed",
        f"Discord did not take the test message: {result.error}",
        status_code=status.HTTP_502_BAD_GATEWAY,
    )


# Discord bans the IP for a while after 10,000 invalid requests (401/403/429) in 10 minutes.
INVALID_WINDOW_S = 600
# The rate-limit bucket of the system webhook, which is no channel row (channel ids start at 1).
SYSTEM_WEBHOOK_BUCKET = 0


def _blocked_key(channel_id: int | None) -> str:
    """Per channel (a webhook's bucket), or for all channels (Discord's global limit) when None."""
    return key("alerts", "discord-blocked", str(channel_id) if channel_id is not None else "global")


def _block(channel_id: int | None, seconds: float) -> None:
    sync_client().set(_blocked_key(channel_id), "1", px=max(1, int(seconds * 1000)))


def _blocked_for(channel_id: int) -> float:
    ttls = sync_client().pttl(_blocked_key(channel_id)), sync_client().pttl(_blocked_key(None))
    return max(0, *(int(t) for t in ttls)) / 1000  # type: ignore[arg-type]


def _invalid_request_counted() -> None:
    """Counts an invalid request in this 10-minute window (shared by every worker through Redis). When
    this window and the previous one together reach ALERTS_DISCORD_INVALID_LIMIT (below Discord's
    10,000; the two windows cover any 10 minutes Discord may count), every channel is held for 10
    minutes, long enough for those requests to leave any window Discord counts."""
    window = int(time.time() // INVALID_WINDOW_S)
    current = key("alerts", "discord-invalid", str(window))
    pipe = sync_client().pipeline()
    pipe.incr(current)
    pipe.expire(current, 2 * INVALID_WINDOW_S)
    pipe.get(key("alerts", "discord-invalid", str(window - 1)))
    count, _, previous = pipe.execute()
    total = int(count) + int(previous or 0)
    limit = settings.ALERTS_DISCORD_INVALID_LIMIT
    if total >= limit:
        _block(None, INVALID_WINDOW_S)
        log.error(
            "discord: %d invalid requests (401/403/429) in the last 10 minutes reached the limit of %d "
            "(Discord bans the IP at 10,000): holding every channel for %ds",
            total,
            limit,
            INVALID_WINDOW_S,
        )


def _posted(channel_id: int, result: discord.WebhookResult) -> None:
    """What every answer to a POST tells about the channel's bucket and Discord's invalid-request count."""
    if result.blocked_for:
        _block(channel_id, result.blocked_for)
    if result.invalid:
        _invalid_request_counted()


def _disable_if_rejected(channel: NotificationChannel, result: discord.WebhookResult) -> bool:
    """A webhook Discord refuses (deleted, or its token revoked) disables the channel until its owner
    gives it a new URL: every later post would be refused too, and counted as invalid."""
    if result.status not in (401, 403, 404) and result.code != discord.UNKNOWN_WEBHOOK:
        return False
    channel.enabled = False
    channel.disabled_reason = f"webhook rejected: {result.error}"[:200]
    channel.save(update_fields=["enabled", "disabled_reason"])
    return True
