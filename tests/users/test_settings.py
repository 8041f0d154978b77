"""A user's own settings: time zone and alert quiet hours (the rules), the console in the operator's
time zone, and the settings on the user's admin page."""

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django import forms
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from alerts.models import AlertPreferences, NotificationChannel
from kernel.errors import ServiceError
from tests.support.users import make_role_user
from users.middleware import UserTimezoneMiddleware
from users.models import AuditLog, User, UserSettings, quiet_hours_until, timezone_validate
from users.roles import ADMINISTRATOR, VIEWER
from users.selectors import user_settings
from users.services import user_settings_update

LONDON = ZoneInfo("Europe/London")


def quiet(start: str, end: str, at: str, zone: ZoneInfo = LONDON) -> datetime | None:
    now = datetime.fromisoformat(at)
    return quiet_hours_until(start=time.fromisoformat(start), end=time.fromisoformat(end), zone=zone, now=now)


def test_quiet_hours_within_a_day_end_the_same_day() -> None:
    assert quiet("12:00", "14:00", "2026-07-01T12:30:00+00:00") == datetime(2026, 7, 1, 14, tzinfo=LONDON)
    assert quiet("12:00", "14:00", "2026-07-01T13:00:00+00:00") is None  # 14:00 in London (BST)
    assert quiet("12:00", "14:00", "2026-07-01T10:59:59+00:00") is None


def test_quiet_hours_across_midnight_end_the_next_morning_or_this_one() -> None:
    evening = quiet("22:00", "07:00", "2026-12-01T23:30:00+00:00")
    assert evening == datetime(2026, 12, 2, 7, tzinfo=LONDON)
    small_hours = quiet("22:00", "07:00", "2026-12-02T03:00:00+00:00")
    assert small_hours == datetime(2026, 12, 2, 7, tzinfo=LONDON)
    assert quiet("22:00", "07:00", "2026-12-02T07:00:00+00:00") is None
    assert quiet("22:00", "07:00", "2026-12-02T21:59:59+00:00") is None
    assert quiet("22:00", "07:00", "2026-12-02T22:00:00+00:00") is not None


def test_quiet_hours_are_wall_clock_times_across_a_clock_change() -> None:
    # The night the clocks go forward in London (01:00 GMT -> 02:00 BST): 07:00 BST is 06:00 UTC.
    until = quiet("22:00", "07:00", "2026-03-28T23:00:00+00:00")
    assert until is not None and until.astimezone(UTC) == datetime(2026, 3, 29, 6, tzinfo=UTC)
    tokyo = quiet("22:00", "07:00", "2026-12-01T14:00:00+00:00", ZoneInfo("Asia/Tokyo"))  # 23:00 there
    assert tokyo is not None and tokyo.astimezone(UTC) == datetime(2026, 12, 1, 22, tzinfo=UTC)


def test_it_knows_iana_zone_names_only() -> None:
    timezone_validate("America/New_York")
    timezone_validate("UTC")
    for bad in ("Mars/Olympus", "", "../etc/passwd", "europe/london", "CET+1"):
        with pytest.raises(ValidationError):
            timezone_validate(bad)


@pytest.mark.django_db
def test_a_user_without_settings_has_the_defaults_and_none_are_stored(alice: User) -> None:
    own = user_settings(user_id=alice.pk)
    assert (own.timezone, own.quiet_hours_start, own.quiet_hours_end) == ("UTC", None, None)
    assert own.quiet_until(timezone.now()) is None
    assert not UserSettings.objects.exists()


@pytest.mark.django_db
def test_settings_are_made_on_the_first_change_and_checked(alice: User) -> None:
    user_settings_update(user=alice, timezone_name="Asia/Tokyo")
    user_settings_update(user=alice, quiet_hours_start=time(22), quiet_hours_end=time(7))
    row = UserSettings.objects.get(user=alice)
    assert (row.timezone, row.quiet_hours_start, row.quiet_hours_end) == ("Asia/Tokyo", time(22), time(7))
    for changes, field in (
        ({"timezone_name": "Nowhere/Land"}, "timezone"),
        ({"quiet_hours_start": None}, "quiet_hours_start"),
        ({"quiet_hours_end": time(22)}, "quiet_hours_end"),
    ):
        with pytest.raises(ServiceError) as refused:
            user_settings_update(user=alice, **changes)
        assert refused.value.status_code == 400 and field in refused.value.fields
    row.refresh_from_db()
    assert (row.timezone, row.quiet_hours_start) == ("Asia/Tokyo", time(22))


@pytest.mark.django_db
def test_the_database_refuses_half_quiet_hours(alice: User) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        UserSettings.objects.create(user=alice, quiet_hours_start=time(22))


def _zone_seen(request: HttpRequest) -> HttpResponse:
    return HttpResponse(timezone.get_current_timezone_name())


@pytest.mark.django_db
def test_the_console_runs_in_the_operators_zone_and_the_api_in_utc(operator: User) -> None:
    user_settings_update(user=operator, timezone_name="America/New_York")
    middleware = UserTimezoneMiddleware(_zone_seen)
    factory = RequestFactory()
    console = factory.get(reverse("admin:index"))
    console.user = operator
    assert middleware(console).content == b"America/New_York"
    assert timezone.get_current_timezone_name() == "UTC"  # not left behind for the next request
    api = factory.get("/api/v1/me")
    api.user = operator
    assert middleware(api).content == b"UTC"
    other = factory.get(reverse("admin:index"))
    other.user = make_role_user("someone", VIEWER)  # no settings: UTC
    assert middleware(other).content == b"UTC"


@pytest.mark.django_db
def test_console_pages_show_times_in_the_operators_zone(operator: User, client: Client) -> None:
    """The audit log's list shows its time as the operator's zone reads it."""
    user_settings_update(user=operator, timezone_name="Asia/Tokyo")
    entry = AuditLog.objects.create(
        actor=operator, action="test.action", created_at=datetime(2026, 12, 2, 14, 5, tzinfo=UTC)
    )  # 23:05 in Tokyo
    client.force_login(operator)
    page = client.get(reverse("admin:users_auditlog_changelist"))
    assert page.status_code == 200 and entry.action.encode() in page.content
    assert b"11:05 p.m." in page.content and b"2:05 p.m." not in page.content


def _change_form_data(page: Any) -> dict[str, Any]:
    """What a browser posts back from an admin change page, unchanged."""
    data: dict[str, Any] = {}
    form = page.context["adminform"].form
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is None or getattr(field, "disabled", False):
            continue
        if isinstance(field, forms.SplitDateTimeField):
            local = timezone.localtime(value).replace(microsecond=0)  # as the widget shows it
            data[f"{name}_0"], data[f"{name}_1"] = local.date().isoformat(), local.time().isoformat()
            if field.show_hidden_initial:  # a callable default: the page also posts what it showed
                data[f"initial-{name}_0"], data[f"initial-{name}_1"] = data[f"{name}_0"], data[f"{name}_1"]
        else:
            data[name] = value
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()})
        for sub in formset.forms:
            for name, field in sub.fields.items():
                value = sub.initial.get(name, field.initial)
                if value is not None:
                    data[sub.add_prefix(name)] = value
    return data


@pytest.mark.django_db
def test_an_administrator_sets_a_users_settings_on_their_page(alice: User, client: Client) -> None:
    channel = NotificationChannel.objects.create(
        user=alice, name="desk", webhook_url="https://discord.com/api/webhooks/1/x"
    )
    administrator = make_role_user("admin1", ADMINISTRATOR)
    client.force_login(administrator)
    url = reverse("admin:users_user_change", args=[alice.pk])
    page = client.get(url)
    assert page.status_code == 200
    prefixes = [inline.formset.prefix for inline in page.context["inline_admin_formsets"]]
    assert prefixes == ["settings", "alert_preferences"]
    data = _change_form_data(page)
    data.update(
        {
            "settings-0-timezone": "Europe/Paris",
            "settings-0-quiet_hours_start": "23:00",
            "settings-0-quiet_hours_end": "06:30",
            "alert_preferences-0-default_timeframes": ["1h", "4h"],
            "alert_preferences-0-default_channel": str(channel.pk),
        }
    )
    done = client.post(url, data)
    assert done.status_code == 302, done.context["adminform"].form.errors if done.context else done
    own = UserSettings.objects.get(user=alice)
    assert (own.timezone, own.quiet_hours_start, own.quiet_hours_end) == (
        "Europe/Paris",
        time(23),
        time(6, 30),
    )
    preferences = AlertPreferences.objects.get(user=alice)
    assert preferences.default_timeframes == ["1h", "4h"] and preferences.default_channel == channel
    entry = AuditLog.objects.get(action="user.change", object_id=str(alice.pk))
    assert entry.actor == administrator and entry.details["fields"] == []
    assert entry.details["settings"] == {
        "timezone": "Europe/Paris",
        "quiet_hours_start": "23:00:00",
        "quiet_hours_end": "06:30:00",
    }
    assert entry.details["alert_preferences"] == {
        "default_timeframes": ["1h", "4h"],
        "default_channel": str(channel),
    }

    data = _change_form_data(client.get(url))
    data["settings-0-timezone"] = "Paris"
    refused = client.post(url, data)
    assert refused.status_code == 200 and b"Unknown time zone" in refused.content


@pytest.mark.django_db
def test_a_user_page_offers_only_that_users_channels(alice: User, bob: User, client: Client) -> None:
    NotificationChannel.objects.create(
        user=bob, name="bobs", webhook_url="https://discord.com/api/webhooks/2/y"
    )
    client.force_login(make_role_user("admin1", ADMINISTRATOR))
    page = client.get(reverse("admin:users_user_change", args=[alice.pk]))
    assert b"bobs" not in page.content


@pytest.mark.django_db
def test_every_role_changes_their_own_settings_in_the_console(client: Client) -> None:
    viewer = make_role_user("viewer1", VIEWER)
    NotificationChannel.objects.create(
        user=viewer, name="mine", webhook_url="https://discord.com/api/webhooks/3/z"
    )
    client.force_login(viewer)
    url = reverse("admin:alerts_my_settings")
    assert client.get(url).status_code == 200
    channel = NotificationChannel.objects.get(user=viewer)
    saved = client.post(
        url,
        {
            "timezone": "Australia/Sydney",
            "quiet_hours_start": "21:00",
            "quiet_hours_end": "08:00",
            "default_timeframes": ["15m"],
            "default_channel": str(channel.pk),
        },
    )
    assert saved.status_code == 302
    assert user_settings(user_id=viewer.pk).timezone == "Australia/Sydney"
    assert AlertPreferences.objects.get(user=viewer).default_channel == channel
    half = client.post(url, {"timezone": "Australia/Sydney", "quiet_hours_start": "21:00"})
    assert half.status_code == 400 and b"or neither" in half.content
    assert client.get(reverse("admin:index")).content.count(b"My settings") == 1


@pytest.mark.django_db
def test_staff_who_may_only_see_users_see_their_settings_read_only(
    alice: User, client: Client, staff_user: Any
) -> None:
    user_settings_update(user=alice, timezone_name="Europe/Madrid")
    client.force_login(staff_user("users.view_user"))
    page = client.get(reverse("admin:users_user_change", args=[alice.pk]))
    assert page.status_code == 200 and b"Europe/Madrid" in page.content
    assert b'name="settings-0-timezone"' not in page.content


@pytest.mark.django_db
def test_a_role_given_on_a_users_page_is_audited_with_the_roles_held(alice: User, client: Client) -> None:
    administrator = make_role_user("admin1", ADMINISTRATOR)
    client.force_login(administrator)
    url = reverse("admin:users_user_change", args=[alice.pk])
    data = _change_form_data(client.get(url))
    viewer = Group.objects.get(name=VIEWER)
    data["groups"] = [str(viewer.pk)]
    done = client.post(url, data)
    assert done.status_code == 302
    entry = AuditLog.objects.get(action="user.change", object_id=str(alice.pk))
    assert entry.actor == administrator
    assert entry.details == {"fields": ["groups"], "roles": [VIEWER]}
