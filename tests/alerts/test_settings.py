"""The user's settings where alerts use them: GET/PATCH /api/v1/me/settings, a new rule's default
channel, the signals grid's default symbols and timeframes, embeds in the owner's time zone, and
alerts held through quiet hours (across midnight) then delivered, by a real Celery worker."""

import re
import time as clock
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from alerts.models import AlertEvent, AlertPreferences, AlertRule, Notification, SystemNotice
from alerts.services import alerts_evaluate_bar_close, notification_channel_test, notification_deliver
from alerts.tasks import notifications_requeue
from livermore.celery import app
from marketdata.models import Instrument
from tests.alerts.signal_data import seed_signals
from tests.fakes.discord import FakeDiscord
from tests.support.users import grant
from tests.support.waiting import wait_until
from users.models import User, UserSettings
from users.services import user_settings_update

from .conftest import BAR, bar_values, channel_for, macdv_rule
from .test_delivery_worker import celery_worker

URL = "/api/v1/me/settings"


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def invalid_fields(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "invalid"
    fields: dict[str, list[str]] = body["error"]["fields"]
    return fields


@pytest.mark.django_db
class TestSettingsApi:
    def test_a_new_user_has_the_defaults(self, alice: User) -> None:
        assert client_for(alice).get(URL).json() == {
            "timezone": "UTC",
            "default_symbols": [],
            "default_timeframes": [],
            "default_channel": None,
            "quiet_hours_start": None,
            "quiet_hours_end": None,
        }
        assert not UserSettings.objects.exists() and not AlertPreferences.objects.exists()

    def test_it_changes_what_is_given_and_keeps_the_rest(
        self, alice: User, instruments: None, discord: FakeDiscord
    ) -> None:
        channel, _ = channel_for(alice, discord)
        api = client_for(alice)
        changed = api.patch(
            URL,
            {
                "timezone": "Europe/Berlin",
                "default_symbols": ["ETHUSD", "BTCUSD", "BTCUSD"],
                "default_timeframes": ["1d", "1h"],
                "default_channel": channel.pk,
                "quiet_hours_start": "22:30",
                "quiet_hours_end": "06:00",
            },
            format="json",
        )
        assert changed.status_code == 200, changed.content
        expected = {
            "timezone": "Europe/Berlin",
            "default_symbols": ["BTCUSD", "ETHUSD"],
            "default_timeframes": ["1h", "1d"],
            "default_channel": channel.pk,
            "quiet_hours_start": "22:30:00",
            "quiet_hours_end": "06:00:00",
        }
        assert changed.json() == expected
        assert api.patch(URL, {"timezone": "Asia/Tokyo"}, format="json").json() == {
            **expected,
            "timezone": "Asia/Tokyo",
        }
        cleared = api.patch(
            URL,
            {
                "quiet_hours_start": None,
                "quiet_hours_end": None,
                "default_channel": None,
                "default_symbols": [],
            },
            format="json",
        ).json()
        assert cleared["quiet_hours_start"] is None and cleared["default_channel"] is None
        assert cleared["default_symbols"] == [] and cleared["default_timeframes"] == ["1h", "1d"]

    def test_quiet_hours_are_wall_clock_times_in_the_schema_and_the_answers(self, alice: User) -> None:
        # RFC 3339's full-time (OpenAPI's `format: time`) needs an offset; these times are in the
        # settings' zone, so the schema gives a pattern, and every answer matches it.
        schema = SchemaGenerator().get_schema(request=None, public=True)
        fields = schema["components"]["schemas"]["Settings"]["properties"]
        pattern = re.compile(fields["quiet_hours_start"]["pattern"])
        assert fields["quiet_hours_end"]["pattern"] == pattern.pattern
        assert "format" not in fields["quiet_hours_start"] and "format" not in fields["quiet_hours_end"]
        api = client_for(alice)
        given = {"quiet_hours_start": "19:53:43.250001", "quiet_hours_end": "07:05"}
        assert all(pattern.fullmatch(value) for value in given.values())
        body = api.patch(URL, given, format="json").json()
        assert (body["quiet_hours_start"], body["quiet_hours_end"]) == ("19:53:43.250001", "07:05:00")
        assert all(pattern.fullmatch(body[name]) for name in given)
        for bad in ("24:00", "7:05", "07:05+01:00"):
            assert not pattern.fullmatch(bad)
            assert "quiet_hours_start" in invalid_fields(
                api.patch(URL, {**given, "quiet_hours_start": bad}, format="json")
            )
        stored = api.get(URL).json()  # the refused changes left the stored hours as they were
        assert (stored["quiet_hours_start"], stored["quiet_hours_end"]) == ("19:53:43.250001", "07:05:00")

    def test_bad_values_are_400_naming_the_field_and_change_nothing(
        self, alice: User, bob: User, instruments: None, discord: FakeDiscord
    ) -> None:
        api = client_for(alice)
        api.patch(URL, {"timezone": "Europe/Rome"}, format="json")
        bobs, _ = channel_for(bob, discord)
        assert "timezone" in invalid_fields(api.patch(URL, {"timezone": "Rome"}, format="json"))
        symbols = invalid_fields(
            api.patch(URL, {"default_symbols": ["BTCUSD", "NOPE"], "timezone": "UTC"}, format="json")
        )
        assert symbols == {"default_symbols": ["Unknown instruments: NOPE."]}
        assert "default_timeframes" in invalid_fields(
            api.patch(URL, {"default_timeframes": ["2h"]}, format="json")
        )
        half = invalid_fields(api.patch(URL, {"quiet_hours_start": "22:00"}, format="json"))
        assert list(half) == ["quiet_hours_end"]
        same = {"quiet_hours_start": "22:00", "quiet_hours_end": "22:00"}
        assert list(invalid_fields(api.patch(URL, same, format="json"))) == ["quiet_hours_end"]
        assert "quiet_hours_start" in invalid_fields(
            api.patch(URL, {"quiet_hours_start": "25:00", "quiet_hours_end": "06:00"}, format="json")
        )
        # Another user's channel reads exactly as one that does not exist.
        theirs = invalid_fields(api.patch(URL, {"default_channel": bobs.pk}, format="json"))
        missing = invalid_fields(api.patch(URL, {"default_channel": 999_999}, format="json"))
        assert theirs == {"default_channel": [f"No notification channel {bobs.pk} of yours."]}
        assert missing == {"default_channel": ["No notification channel 999999 of yours."]}
        assert api.get(URL).json()["timezone"] == "Europe/Rome"  # the symbols' request changed nothing
        assert not AlertPreferences.objects.filter(default_symbols__isnull=False).exists()

    def test_anonymous_is_401(self, db: None) -> None:
        assert APIClient().get(URL).status_code == 401
        assert APIClient().patch(URL, {"timezone": "UTC"}, format="json").status_code == 401


RULE = {"symbol": "BTCUSD", "timeframe": "1h", "condition": "crossing_up", "threshold": "100000"}


@pytest.mark.django_db
class TestRuleChannel:
    def test_a_rule_made_without_a_channel_takes_the_default(
        self, alice: User, btc: Instrument, discord: FakeDiscord
    ) -> None:
        api = client_for(alice)
        assert api.post("/api/v1/alert-rules", RULE, format="json").json()["channel"] is None  # no default
        default, _ = channel_for(alice, discord)
        other, _ = channel_for(alice, discord)
        api.patch(URL, {"default_channel": default.pk}, format="json")
        assert api.post("/api/v1/alert-rules", RULE, format="json").json()["channel"] == default.pk
        chosen = api.post("/api/v1/alert-rules", {**RULE, "channel": other.pk}, format="json").json()
        assert chosen["channel"] == other.pk
        every = api.post("/api/v1/alert-rules", {**RULE, "channel": None}, format="json").json()
        assert every["channel"] is None
        edited = api.patch(f"/api/v1/alert-rules/{every['id']}", {"channel": other.pk}, format="json")
        assert edited.json()["channel"] == other.pk

    def test_another_users_channel_is_refused_as_unknown(
        self, alice: User, bob: User, btc: Instrument, discord: FakeDiscord
    ) -> None:
        bobs, _ = channel_for(bob, discord)
        refused = client_for(alice).post("/api/v1/alert-rules", {**RULE, "channel": bobs.pk}, format="json")
        unknown = client_for(alice).post("/api/v1/alert-rules", {**RULE, "channel": 999_999}, format="json")
        assert list(invalid_fields(refused)) == ["channel"]
        assert invalid_fields(refused)["channel"][0].replace(str(bobs.pk), "N") == invalid_fields(unknown)[
            "channel"
        ][0].replace("999999", "N")
        assert not AlertRule.objects.exists()

    def test_a_rule_with_a_channel_notifies_that_channel_only(
        self, alice: User, btc: Instrument, discord: FakeDiscord
    ) -> None:
        own, _ = channel_for(alice, discord)
        channel_for(alice, discord)
        ruled = macdv_rule(alice, btc)
        ruled.channel = own
        ruled.save()
        macdv_rule(alice, btc)  # no channel: every enabled one
        for i, value in enumerate((-100.0, -160.0)):
            alerts_evaluate_bar_close(
                symbol="BTCUSD", timeframe="5m", bar_start=BAR + i * 300, values=bar_values(value)
            )
        sent_to = {
            rule: sorted(Notification.objects.filter(event__rule=rule).values_list("channel_id", flat=True))
            for rule in AlertRule.objects.all()
        }
        assert sent_to[ruled] == [own.pk]
        assert len(sent_to[AlertRule.objects.exclude(pk=ruled.pk).get()]) == 2


@pytest.mark.django_db
class TestSignalDefaults:
    @pytest.fixture
    def analyst(self) -> User:
        seed_signals()
        return grant(User.objects.create_user("analyst"), "alerts.view_signals")

    def cells(self, api: APIClient, **params: str) -> set[tuple[str, str]]:
        response = api.get("/api/v1/signals", params)
        assert response.status_code == 200, response.content
        return {(r["symbol"], r["timeframe"]) for r in response.json()["results"]}

    def test_the_grid_shows_the_users_default_symbols_and_timeframes(
        self, analyst: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        api = client_for(analyst)
        everything = self.cells(api)
        with django_capture_on_commit_callbacks(execute=True):  # the defaults' version moves on
            api.patch(
                URL, {"default_symbols": ["ETHUSD", "EURUSD"], "default_timeframes": ["1h"]}, format="json"
            )
        assert self.cells(api) == {("ETHUSD", "1h"), ("EURUSD", "1h")}
        assert self.cells(api, tf="1d") == {("ETHUSD", "1d"), ("EURUSD", "1d")}
        assert self.cells(api, symbol="BTCUSD") == {("BTCUSD", "1h")}
        assert self.cells(api, defaults="false") == everything

    def test_a_default_symbol_no_longer_enabled_is_left_out(self, analyst: User) -> None:
        api = client_for(analyst)
        api.patch(URL, {"default_symbols": ["USDJPY", "GBPUSD"]}, format="json")  # USDJPY: disabled
        assert {symbol for symbol, _ in self.cells(api)} == {"GBPUSD"}


def fire(user: User, btc: Instrument, discord: FakeDiscord) -> tuple[Notification, str]:
    channel, webhook_id = channel_for(user, discord)
    macdv_rule(user, btc)
    for i, value in enumerate((-100.0, -160.0)):
        alerts_evaluate_bar_close(
            symbol="BTCUSD", timeframe="5m", bar_start=BAR + i * 300, values=bar_values(value)
        )
    return Notification.objects.get(channel=channel), webhook_id


@pytest.mark.django_db
def test_the_embed_shows_times_in_the_owners_zone(alice: User, btc: Instrument, discord: FakeDiscord) -> None:
    user_settings_update(user=alice, timezone_name="America/New_York")
    notification, webhook_id = fire(alice, btc, discord)
    assert notification_deliver(notification_id=notification.pk) is None
    (received,) = discord.posted(webhook_id)
    (embed,) = received.payload["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    event = AlertEvent.objects.get()
    fired = event.fired_at.astimezone(ZoneInfo("America/New_York"))
    assert fields["Fired"] == fired.strftime("%Y-%m-%d %H:%M:%S ") + "EST"
    assert fields["Bar 5m"] == "2025-12-31 19:05 EST"  # the second bar: 00:05 UTC on 1 January
    assert embed["timestamp"] == event.fired_at.astimezone(UTC).isoformat()  # Discord's: UTC


@pytest.mark.django_db
def test_the_test_message_says_when_in_the_owners_zone(alice: User, discord: FakeDiscord) -> None:
    user_settings_update(user=alice, timezone_name="Asia/Kolkata")
    channel, webhook_id = channel_for(alice, discord)
    notification_channel_test(channel=channel)
    (received,) = discord.posted(webhook_id)
    description = received.payload["embeds"][0]["description"]
    assert description.endswith(" IST.") and "Sent " in description


def zone_past_midnight(now: datetime) -> str:
    """A fixed-offset zone in which `now` is between midnight and 1 a.m. (Etc/GMT-N is UTC+N)."""
    offset = -now.hour if now.hour <= 12 else 24 - now.hour
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def quiet_until_soon(user: User, seconds: float) -> datetime:
    """Quiet hours from 23:00 to `seconds` from now, in a zone where it is just past midnight: a span
    across midnight that ends in a moment. Returns when they end."""
    now = timezone.now()
    zone = zone_past_midnight(now)
    end = now + timedelta(seconds=seconds)
    user_settings_update(
        user=user,
        timezone_name=zone,
        quiet_hours_start=time(23),
        quiet_hours_end=end.astimezone(ZoneInfo(zone)).time(),
    )
    return end


@pytest.mark.django_db
def test_an_alert_in_quiet_hours_is_held_then_sent_when_they_end(
    alice: User, btc: Instrument, discord: FakeDiscord
) -> None:
    end = quiet_until_soon(alice, 2.0)
    notification, webhook_id = fire(alice, btc, discord)
    assert notification_deliver(notification_id=notification.pk) is None  # held: nothing scheduled
    notification.refresh_from_db()
    assert notification.status == "pending" and notification.next_attempt_at == end
    assert discord.posted(webhook_id) == [] and notification.attempt_log == []
    clock.sleep(max(0.0, (end - timezone.now()).total_seconds()) + 0.05)
    assert notification_deliver(notification_id=notification.pk) is None
    notification.refresh_from_db()
    assert notification.status == "sent" and notification.sent_at is not None and notification.sent_at >= end
    assert len(discord.posted(webhook_id)) == 1


@pytest.mark.django_db
def test_system_notices_are_not_held(alice: User, discord: FakeDiscord) -> None:
    quiet_until_soon(alice, 60.0)
    channel, webhook_id = channel_for(alice, discord)
    notice = SystemNotice.objects.create(
        kind="venue.down", items=[{"subject": "lp", "text": "down", "at": ""}]
    )
    row = Notification.objects.create(system_notice=notice, channel=channel)
    assert notification_deliver(notification_id=row.pk) is None
    assert len(discord.posted(webhook_id)) == 1


@pytest.fixture
def worker() -> Iterator[Path]:
    """A real Celery worker whose requeue job sends rows as soon as they are due (no grace)."""
    app.control.purge()
    with celery_worker(ALERTS_REQUEUE_GRACE_S="0") as (_, log):
        wait_until(lambda: "ready." in log.read_text(), timeout_s=120, what="the worker to start")
        yield log


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_holds_an_alert_through_quiet_hours_across_midnight_then_delivers_it(
    worker: Path, alice: User, btc: Instrument
) -> None:
    with FakeDiscord(bucket_limit=50, bucket_window_s=1.0) as discord:
        end = quiet_until_soon(alice, 8.0)
        settings_row = UserSettings.objects.get(user=alice)
        assert settings_row.quiet_hours_start is not None and settings_row.quiet_hours_end is not None
        assert settings_row.quiet_hours_start > settings_row.quiet_hours_end  # across midnight
        notification, webhook_id = fire(alice, btc, discord)  # its delivery task is queued on commit

        def held() -> bool:
            notification.refresh_from_db()
            return notification.next_attempt_at == end

        wait_until(held, timeout_s=30, what="the worker to hold the alert")
        while timezone.now() < end:  # the beat's requeue job, every half second: nothing due yet
            notifications_requeue.delay()
            assert discord.posted(webhook_id) == []
            clock.sleep(0.5)

        def sent() -> bool:
            notifications_requeue.delay()
            notification.refresh_from_db()
            return notification.status == "sent"

        wait_until(sent, timeout_s=30, what="delivery after the quiet hours")
        assert notification.sent_at is not None and notification.sent_at >= end
        (received,) = discord.posted(webhook_id)
        fields = {f["name"]: f["value"] for f in received.payload["embeds"][0]["fields"]}
        assert fields["Fired"].endswith(settings_row.zone.tzname(end) or "")
