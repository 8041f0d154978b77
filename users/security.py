"""Brute-force lockout: django-axes per (username, client address), a cap on failed logins per client
address across usernames, and the lockout response in the API's error shape."""

import time
import uuid
from typing import Any, cast

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status

from kernel.clientip import client_ip
from kernel.errors import error_body
from kernel.redis import key, sync_client

from . import services
from .models import User

LOCKED_OUT_MESSAGE = "Too many failed login attempts. Try again later."


class LockedOut(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = LOCKED_OUT_MESSAGE
    default_code = "locked_out"


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: what a locked-out client gets from the admin login (and any other
    Django login form): 429 with the API error body."""
    response = JsonResponse(error_body("locked_out", LOCKED_OUT_MESSAGE), status=LockedOut.status_code)
    cool_off = get_cool_off(request)
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response


def _failures_key(address: str) -> str:
    return key("login-failures", address)


def login_failures(address: str) -> int:
    """Failed logins from `address`, any username, within the lockout's cool-off window."""
    now = time.time()
    window = get_cool_off()
    client = sync_client()
    client.zremrangebyscore(_failures_key(address), "-inf", now - (window.total_seconds() if window else 0))
    return cast("int", client.zcard(_failures_key(address)))


@receiver(user_login_failed)
def record_login_failure(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kw: Any
) -> None:
    address = client_ip(request) if request is not None else ""
    if not address:
        return
    window = get_cool_off()
    pipe = sync_client().pipeline()
    pipe.zadd(_failures_key(address), {uuid.uuid4().hex: time.time()})
    pipe.pexpire(_failures_key(address), int((window.total_seconds() if window else 1) * 1000))
    pipe.execute()


class AddressLoginLimitBackend:
    """Second in AUTHENTICATION_BACKENDS, after axes (per username and address): refuses every login
    from a client address with settings.LOGIN_FAILURES_PER_ADDRESS failures, any usernames, within
    the cool-off window (password spraying). The refusal is a lockout like axes' own (429)."""

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> None:
        address = client_ip(request) if request is not None else ""
        if not address or login_failures(address) < settings.LOGIN_FAILURES_PER_ADDRESS:
            return None
        assert request is not None
        request.axes_locked_out = True  # type: ignore[attr-defined]  # read by AxesMiddleware and the token view
        raise PermissionDenied(LOCKED_OUT_MESSAGE)


@receiver(pre_save, sender=User)
def _remember_credentials(
    sender: type[User], instance: User, update_fields: frozenset[str] | None = None, **kwargs: Any
) -> None:
    instance._saved_credentials = None  # type: ignore[attr-defined]
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & update_fields):
        return
    instance._saved_credentials = (  # type: ignore[attr-defined]
        User.objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    )


@receiver(post_save, sender=User)
def _revoke_on_credential_change(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    """A changed password or a deactivation ends every refresh token and the user's open streams."""
    saved = getattr(instance, "_saved_credentials", None)
    if created or saved is None:
        return
    password, was_active = saved
    deactivated = was_active and not instance.is_active
    if deactivated or password != instance.password:
        services.user_credentials_revoke(user=instance)
