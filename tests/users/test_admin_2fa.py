"""Admin two-factor login (django-otp): a password alone opens nothing when it is required; a TOTP
code or a one-use recovery code does."""

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import AdminSite
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from livermore.apps import admin_site_secure
from tests.support.users import PASSWORD
from users.models import AuditLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_factor(settings: Any) -> Iterator[None]:
    """The admin as production runs it."""
    settings.ADMIN_2FA_REQUIRED = True
    admin_site_secure()
    yield
    admin.site.__class__ = AdminSite


def enrol(username: str) -> list[str]:
    out = StringIO()
    call_command("otp_enrol", username, "--no-qr", stdout=out)
    text = out.getvalue()
    assert "otpauth://totp/Livermore" in text
    return text.split("not shown again):", 1)[1].split()


def login(client: Client, **otp: str) -> Any:
    return client.post("/admin/login/?next=/admin/", {"username": "ops", "password": PASSWORD, **otp})


def test_a_password_alone_opens_nothing(two_factor: None, operator: Any, client: Client) -> None:
    enrol("ops")
    response = login(client)
    assert response.status_code == 200 and "/admin/login/" in response.request["PATH_INFO"]
    client.force_login(operator)  # a session from before 2FA, never verified
    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/brokerage/tradingaccount/").status_code == 302


def test_password_and_authenticator_code_open_the_admin(
    two_factor: None, operator: Any, client: Client
) -> None:
    enrol("ops")
    device = TOTPDevice.objects.get(user=operator)
    token = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"
    response = login(client, otp_device=device.persistent_id, otp_token=token)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_recovery_code_works_once(two_factor: None, operator: Any) -> None:
    codes = enrol("ops")
    assert len(codes) == 10
    recovery = StaticDevice.objects.get(user=operator)
    first = Client()
    assert login(first, otp_device=recovery.persistent_id, otp_token=codes[0]).status_code == 302
    assert first.get("/admin/").status_code == 200
    again = Client()
    assert login(again, otp_device=recovery.persistent_id, otp_token=codes[0]).status_code == 200
    assert again.get("/admin/").status_code == 302


def test_enrolling_again_replaces_the_device_and_codes(operator: Any) -> None:
    first = enrol("ops")
    old_key = TOTPDevice.objects.get(user=operator).key
    second = enrol("ops")
    assert TOTPDevice.objects.get(user=operator).key != old_key
    assert not set(first) & set(second)
    assert AuditLog.objects.filter(action="user.otp_enrol", object_id=str(operator.pk)).count() == 2


def test_only_staff_are_enrolled(alice: Any) -> None:
    with pytest.raises(CommandError, match="not active staff"):
        enrol("alice")


def test_in_development_a_password_still_opens_the_admin(client: Client, operator: Any) -> None:
    assert login(client).status_code == 302
    assert client.get("/admin/").status_code == 200
