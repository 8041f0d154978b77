"""The alert grammar through the services, the API and the admin: the flood stop on quotes and on bar
close, expiry, "send test message" against the Discord fake, and bad specs refused."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from alerts.listeners import LiveAlerts
from alerts.models import AlertEvent, AlertRule, Notification, NotificationChannel
from alerts.rules import FLOOD_MAX, STOPPED
from alerts.services import alert_rules_expire
from livermore.schedules import JOBS
from marketdata.models import Instrument
from marketdata.quotes import Quote, SelectedQuote
from tests.fakes.discord import FakeDiscord, Status
from tests.support.users import StaffFactory, grant

from .conftest import BAR, channel_for

RULE = {
    "symbol": "BTCUSD",
    "timeframe": "1h",
    "condition": "crossing",
    "threshold": "100000",
    "frequency": "once",
}


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def quote(mid: str, second: int) -> SelectedQuote:
    ts = (BAR + second) * 1_000_000_000
    return SelectedQuote(
        "BTCUSD", second, Quote("BTCUSD", "sim", Decimal(mid) - 1, Decimal(mid) + 1, ts, ts), True
    )


def live_rule(user: Any, instrument: Instrument, **kw: Any) -> AlertRule:
    fields = {
        "timeframe": "1m",
        "condition": "greater_than",
        "threshold": 95000,
        "frequency": "every_time",
        **kw,
    }
    return AlertRule.objects.create(user=user, instrument=instrument, **fields)


def run_quotes(listener: LiveAlerts, mids: list[str], *, start: int = 1) -> None:
    listener(quote("94000", start - 1))  # loads the rules in the background
    listener.flush()
    for i, mid in enumerate(mids):
        listener(quote(mid, start + i))
    listener.flush()


# -- the flood stop --------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_fifteen_live_firings_in_three_minutes_are_all_delivered(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    channel, _ = channel_for(alice, discord)
    rule = live_rule(alice, btc)
    run_quotes(LiveAlerts(), ["95001"] * FLOOD_MAX)
    rule.refresh_from_db()
    assert rule.status == AlertRule.Status.ACTIVE
    events = AlertEvent.objects.filter(rule=rule)
    assert events.count() == 15 and not events.filter(label__startswith=STOPPED).exists()
    assert Notification.objects.filter(channel=channel).count() == 15


@pytest.mark.django_db(transaction=True)
def test_the_sixteenth_live_firing_stops_the_rule_and_tells_its_owner(
    alice: Any, btc: Instrument, discord: FakeDiscord
) -> None:
    channel, _ = channel_for(alice, discord)
    rule = live_rule(alice, btc)
    listener = LiveAlerts()
    run_quotes(listener, ["95001"] * 25)
    rule.refresh_from_db()
    assert rule.status == AlertRule.Status.STOPPED and rule.state["stopped"] is True
    events = list(AlertEvent.objects.filter(rule=rule).order_by("fired_at", "id"))
    firings = [e for e in events if e.label.startswith("greater_than@")]
    (notice,) = [e for e in events if e.label.startswith(STOPPED)]
    assert len(firings) == 15 and len(events) == 16
    assert notice.label == f"{STOPPED}@{(BAR + 16) * 1000}"  # the 16th quote, 16 s after the first
    assert notice.title == (
        "Alert stopped, triggered more than 15 times in 3 minutes: BTCUSD: Price is above 95000 (1m)"
    )
    assert Notification.objects.filter(event=notice, channel=channel, status="pending").exists()
    # the listener drops the stopped rule at its next refresh
    listener._next_refresh = 0
    listener(quote("95001", 100))
    listener.flush()
    assert listener.rules.get("BTCUSD", []) == []


@pytest.mark.django_db(transaction=True)
def test_the_stored_state_decides_the_flood_stop(alice: Any, btc: Instrument) -> None:
    """A listener that knows nothing of 15 recent firings (another process made them) still cannot
    make a 16th: the service re-checks each firing against the stored state."""
    recent = [BAR - 100.0 + i for i in range(FLOOD_MAX)]  # the last 100 s
    rule = live_rule(alice, btc, state={"recent": recent, "last_ts": recent[-1]})
    listener = LiveAlerts()
    listener(quote("94000", 0))
    listener.flush()
    listener.rules["BTCUSD"][0].state.recent = []  # the stale in-memory view
    listener(quote("95001", 1))
    listener.flush()
    rule.refresh_from_db()
    assert rule.status == AlertRule.Status.STOPPED
    assert list(AlertEvent.objects.filter(rule=rule).values_list("label", flat=True)) == [
        f"{STOPPED}@{(BAR + 1) * 1000}"
    ]


@pytest.mark.django_db(transaction=True)
def test_the_stored_state_decides_once_per_minute(alice: Any, btc: Instrument) -> None:
    """Fired 30 s ago according to the stored state: a listener that missed it cannot fire then
    (its own next firing comes 60 s after what it believed was one)."""
    rule = live_rule(alice, btc, frequency="once_per_minute", state={"last_ts": BAR - 29.0})
    listener = LiveAlerts()
    listener(quote("94000", 0))
    listener.flush()
    listener.rules["BTCUSD"][0].state.last_ts = None  # the stale in-memory view
    for second in (1, 2, 61):
        listener(quote("95001", second))
    listener.flush()
    labels = list(AlertEvent.objects.filter(rule=rule).values_list("label", flat=True))
    assert labels == [f"greater_than@{(BAR + 61) * 1_000_000_000}"]


@pytest.mark.django_db(transaction=True)
def test_a_re_armed_rule_fires_again_on_quotes(alice: Any, btc: Instrument) -> None:
    """The listener keeps its in-memory progress across refreshes, but not across an edit by the
    owner: re-arming a stopped rule makes it fire again at once."""
    rule = live_rule(alice, btc)
    listener = LiveAlerts()
    run_quotes(listener, ["95001"] * 20)
    rule.refresh_from_db()
    assert rule.status == AlertRule.Status.STOPPED
    response = client_for(alice).patch(f"/api/v1/alert-rules/{rule.pk}", {"status": "active"}, format="json")
    assert response.status_code == 200
    listener._next_refresh = 0
    listener(quote("95001", 200))  # refreshes: the re-armed rule comes back with a fresh state
    listener.flush()
    listener(quote("95002", 201))
    listener.flush()
    assert AlertEvent.objects.filter(rule=rule, label=f"greater_than@{(BAR + 201) * 1_000_000_000}").exists()


@pytest.mark.django_db
def test_its_owner_re_arms_a_stopped_rule(alice: Any, btc: Instrument) -> None:
    rule = live_rule(alice, btc, status="stopped", state={"stopped": True, "recent": [1.0] * 15})
    response = client_for(alice).patch(f"/api/v1/alert-rules/{rule.pk}", {"status": "active"}, format="json")
    assert response.status_code == 200, response.json()
    rule.refresh_from_db()
    assert (rule.status, rule.state) == ("active", {})
    assert (
        client_for(alice)
        .patch(f"/api/v1/alert-rules/{rule.pk}", {"status": "stopped"}, format="json")
        .status_code
        == 400
    )  # only the engine stops a rule


# -- expiry ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_expiry_job_marks_rules_past_their_expiry(alice: Any, btc: Instrument) -> None:
    now = timezone.now()
    past = live_rule(alice, btc, expires_at=now - timedelta(seconds=1))
    future = live_rule(alice, btc, expires_at=now + timedelta(hours=1))
    open_ended = live_rule(alice, btc)
    assert any(job.task == "alerts.tasks.alert_rules_expire" for job in JOBS)  # every minute, by beat
    assert alert_rules_expire(now=now) == 1
    statuses = dict(AlertRule.objects.values_list("pk", "status"))
    assert statuses == {past.pk: "expired", future.pk: "active", open_ended.pk: "active"}


@pytest.mark.django_db
def test_a_rule_cannot_be_created_or_re_armed_already_expired(alice: Any, btc: Instrument) -> None:
    api = client_for(alice)
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    response = api.post("/api/v1/alert-rules", {**RULE, "expires_at": past}, format="json")
    assert response.status_code == 400 and "expires_at" in response.json()["error"]["fields"]
    assert not AlertRule.objects.exists()
    future = (timezone.now() + timedelta(days=1)).isoformat()
    created = api.post("/api/v1/alert-rules", {**RULE, "expires_at": future}, format="json")
    assert created.status_code == 201, created.json()
    rule = AlertRule.objects.get()
    AlertRule.objects.filter(pk=rule.pk).update(status="expired")
    assert api.patch(f"/api/v1/alert-rules/{rule.pk}", {"name": "renamed"}, format="json").status_code == 200
    stale = api.patch(
        f"/api/v1/alert-rules/{rule.pk}", {"expires_at": past, "status": "active"}, format="json"
    )
    assert stale.status_code == 400 and "expires_at" in stale.json()["error"]["fields"]
    rule.refresh_from_db()
    assert rule.status == "expired"


@pytest.mark.django_db
def test_the_admin_refuses_an_expiry_in_the_past(admin_client: Any, alice: Any, btc: Instrument) -> None:
    form = {
        "user": alice.pk, "name": "", "instrument": btc.pk, "timeframe": "1h", "kind": "condition",
        "source": "price", "condition": "crossing", "threshold": "6", "upper": "", "other": "",
        "bars": 1, "frequency": "once_per_minute", "expires_at_0": "2020-01-01", "expires_at_1": "00:00:00",
        "status": "active",
    }  # fmt: skip
    response = admin_client.post(reverse("admin:alerts_alertrule_add"), form)
    assert response.status_code == 200 and "Must be in the future." in response.content.decode()
    assert not AlertRule.objects.exists()
    future = {**form, "expires_at_0": (timezone.now() + timedelta(days=2)).date().isoformat()}
    assert admin_client.post(reverse("admin:alerts_alertrule_add"), future).status_code == 302
    assert AlertRule.objects.get().frequency == "once_per_minute"


# -- bad specs -------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"condition": "inside_channel"}, "upper"),
        ({"condition": "outside_channel", "upper": "99999"}, "upper"),
        ({"condition": "moving_up", "bars": 3, "threshold": "0"}, "threshold"),
        ({"condition": "moving_down_pct", "bars": 501, "threshold": "2"}, "bars"),
        ({"condition": "moving_up", "bars": 3, "threshold": "5", "other": "ema12"}, "other"),
        ({"bars": 3}, "bars"),
        ({"frequency": "once_per_hour"}, "frequency"),
        ({"condition": "crossing_sideways"}, "condition"),
    ],
)
def test_bad_specs_are_refused_with_the_field_named(
    alice: Any, btc: Instrument, change: dict[str, Any], field: str
) -> None:
    response = client_for(alice).post("/api/v1/alert-rules", {**RULE, **change}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"], error
    assert not AlertRule.objects.exists()


@pytest.mark.django_db
def test_each_new_condition_and_frequency_is_accepted(alice: Any, btc: Instrument) -> None:
    api = client_for(alice)
    for body in (
        {
            **RULE,
            "condition": "inside_channel",
            "threshold": "90000",
            "upper": "100000",
            "frequency": "once_per_minute",
        },
        {**RULE, "condition": "moving_down", "threshold": "500", "bars": 4, "frequency": "every_time"},
        {**RULE, "condition": "crossing", "frequency": "once_per_minute"},
    ):
        response = api.post("/api/v1/alert-rules", body, format="json")
        assert response.status_code == 201, response.json()
    assert [r.live for r in AlertRule.objects.order_by("pk")] == [True, False, True]


# -- send test message -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_owner_sends_a_test_message_to_a_channel(alice: Any, bob: Any, discord: FakeDiscord) -> None:
    channel, webhook_id = channel_for(alice, discord)
    response = client_for(alice).post(f"/api/v1/alert-channels/{channel.pk}/test")
    assert response.status_code == 200, response.json()
    (posted,) = discord.posted(webhook_id)
    assert response.json() == {"sent": True, "message_id": posted.message_id}
    assert posted.wait and posted.payload["embeds"][0]["title"] == "Livermore test message"
    assert client_for(bob).post(f"/api/v1/alert-channels/{channel.pk}/test").status_code == 404
    assert len(discord.posted(webhook_id)) == 1
    assert not Notification.objects.exists()  # outside the outbox


@pytest.mark.django_db
def test_a_test_message_discord_refuses_is_reported(alice: Any, discord: FakeDiscord) -> None:
    broken, broken_id = channel_for(alice, discord)
    discord.script(broken_id, Status(500))
    response = client_for(alice).post(f"/api/v1/alert-channels/{broken.pk}/test")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "test_message_failed"
    assert NotificationChannel.objects.get(pk=broken.pk).enabled  # a server error says nothing of the webhook

    deleted, deleted_id = channel_for(alice, discord)
    discord.delete_webhook(deleted_id)
    response = client_for(alice).post(f"/api/v1/alert-channels/{deleted.pk}/test")
    assert response.status_code == 502 and "Unknown Webhook" in response.json()["error"]["message"]
    deleted.refresh_from_db()
    assert not deleted.enabled and deleted.disabled_reason.startswith("webhook rejected")


@pytest.mark.django_db
def test_the_admin_action_needs_its_permission(
    alice: Any, discord: FakeDiscord, client: Any, staff_user: StaffFactory
) -> None:
    channel, webhook_id = channel_for(alice, discord)
    operator = staff_user("alerts.view_notificationchannel")
    client.force_login(operator)
    url = reverse("admin:alerts_notificationchannel_changelist")
    action = {"action": "send_test_message", "_selected_action": [channel.pk]}
    assert "send_test_message" not in client.get(url).content.decode()
    client.post(url, action, follow=True)
    assert discord.posted(webhook_id) == []

    operator = grant(operator, "alerts.test_notificationchannel")
    client.force_login(operator)
    page = client.post(url, action, follow=True).content.decode()
    (posted,) = discord.posted(webhook_id)
    assert f"test message posted (Discord message {posted.message_id})" in page
    assert channel.webhook_url not in page
