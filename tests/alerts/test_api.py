"""/api/v1/alert-rules, /api/v1/alert-channels and /api/v1/alert-events: per-user, validated."""

from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from alerts.models import AlertEvent, AlertRule, NotificationChannel
from marketdata.models import Instrument

pytestmark = pytest.mark.django_db

RULE = {
    "name": "BTC breakout",
    "symbol": "BTCUSD",
    "timeframe": "1h",
    "condition": "crossing_up",
    "threshold": "100000",
    "frequency": "once",
}


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_it_creates_lists_and_edits_a_users_own_rule(alice: Any, btc: Instrument) -> None:
    api = client_for(alice)
    created = api.post("/api/v1/alert-rules", RULE, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["symbol"] == "BTCUSD" and body["threshold"] == "100000.0000000000"
    assert body["status"] == "active" and body["live"] is True and body["kind"] == "condition"
    assert [r["id"] for r in api.get("/api/v1/alert-rules").json()] == [body["id"]]

    patched = api.patch(
        f"/api/v1/alert-rules/{body['id']}", {"frequency": "once_per_bar_close"}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["live"] is False
    assert api.delete(f"/api/v1/alert-rules/{body['id']}").status_code == 204
    assert not AlertRule.objects.exists()


def test_editing_a_rule_resets_its_state_and_can_reactivate_it(alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1h", condition="greater_than", threshold=1, frequency="once",
        status="triggered", state={"done": True},
    )  # fmt: skip
    response = client_for(alice).patch(f"/api/v1/alert-rules/{rule.pk}", {"status": "active"}, format="json")
    assert response.status_code == 200
    rule.refresh_from_db()
    assert (rule.status, rule.state) == ("active", {})


def test_a_user_never_sees_or_edits_another_users_rules(alice: Any, bob: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1h", condition="less_than", threshold=1
    )
    bob_api = client_for(bob)
    assert bob_api.get("/api/v1/alert-rules").json() == []
    assert bob_api.get(f"/api/v1/alert-rules/{rule.pk}").status_code == 404
    assert (
        bob_api.patch(f"/api/v1/alert-rules/{rule.pk}", {"threshold": "5"}, format="json").status_code == 404
    )
    assert bob_api.delete(f"/api/v1/alert-rules/{rule.pk}").status_code == 404
    rule.refresh_from_db()
    assert rule.threshold == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"condition": "entering_channel"}, "upper"),
        ({"condition": "moving_up_pct", "bars": 0}, "bars"),
        ({"threshold": None}, "threshold"),
        ({"symbol": "NOPE"}, "symbol"),
        ({"frequency": "hourly"}, "frequency"),
        ({"status": "triggered"}, "status"),
        ({"source": "Robert'); DROP TABLE"}, "source"),
    ],
)
def test_it_rejects_an_invalid_rule_with_the_field_named(
    alice: Any, btc: Instrument, change: dict[str, Any], field: str
) -> None:
    response = client_for(alice).post("/api/v1/alert-rules", {**RULE, **change}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert not AlertRule.objects.exists()


def test_a_bad_edit_leaves_the_stored_rule_unchanged(alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1h", condition="entering_channel", threshold=10, upper=20
    )
    response = client_for(alice).patch(f"/api/v1/alert-rules/{rule.pk}", {"upper": "5"}, format="json")
    assert response.status_code == 400 and "upper" in response.json()["error"]["fields"]
    rule.refresh_from_db()
    assert rule.upper == 20


def test_the_macdv_preset_needs_no_condition(alice: Any, btc: Instrument) -> None:
    response = client_for(alice).post(
        "/api/v1/alert-rules", {"symbol": "BTCUSD", "timeframe": "5m", "kind": "macdv"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["live"] is False


def test_anonymous_requests_are_refused(db: Any) -> None:
    response = APIClient().get("/api/v1/alert-rules")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


def test_the_webhook_url_is_write_only(alice: Any) -> None:
    api = client_for(alice)
    url = "https://discord.com/api/webhooks/123/secret-token-value"
    created = api.post("/api/v1/alert-channels", {"name": "desk", "webhook_url": url}, format="json")
    assert created.status_code == 201, created.json()
    assert "secret-token-value" not in created.content.decode()
    assert created.json()["has_webhook"] is True
    assert "secret-token-value" not in api.get("/api/v1/alert-channels").content.decode()
    assert NotificationChannel.objects.get().webhook_url == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/api/webhooks/1/x",
        "http://discord.com/api/webhooks/1/x",
        "https://discord.com/users/1",
        "not a url",
    ],
)
def test_it_rejects_webhook_urls_that_are_not_discord_webhooks(alice: Any, url: str) -> None:
    response = client_for(alice).post(
        "/api/v1/alert-channels", {"name": "x", "webhook_url": url}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook_url"
    assert "webhook_url" in response.json()["error"]["fields"]
    assert not NotificationChannel.objects.exists()


def test_a_new_webhook_url_re_enables_a_disabled_channel(alice: Any) -> None:
    channel = NotificationChannel.objects.create(
        user=alice, name="x", webhook_url="https://discord.com/api/webhooks/1/old", enabled=False,
        disabled_reason="webhook rejected: HTTP 404",
    )  # fmt: skip
    response = client_for(alice).patch(
        f"/api/v1/alert-channels/{channel.pk}",
        {"webhook_url": "https://discord.com/api/webhooks/1/new", "enabled": True},
        format="json",
    )
    assert response.status_code == 200
    channel.refresh_from_db()
    assert channel.enabled and channel.disabled_reason == "" and channel.webhook_url.endswith("/new")


def test_the_alert_history_is_per_user(alice: Any, bob: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice, instrument=btc, timeframe="1h", condition="less_than", threshold=1
    )
    AlertEvent.objects.create(
        rule=rule, user=alice, symbol="BTCUSD", timeframe="1h", bar_start="2026-01-01T00:00Z",
        label="less_than", title="BTCUSD: Price is below 1 (1h)", value="0.5", direction="down",
        payload={
            "bias": "Bullish",
            "stages": {"1h": "rebounding", "1d": "unknown"},
            "diagnostics": {"n_eff": 200, "span": 210, "gap_ratio": 10 / 210, "liquidity": "high"},
        },
    )  # fmt: skip
    (event,) = client_for(alice).get("/api/v1/alert-events").json()["results"]
    assert event["title"] == "BTCUSD: Price is below 1 (1h)" and event["bias"] == "Bullish"
    assert event["stages"] == {"1h": "rebounding", "1d": "unknown"}
    assert event["diagnostics"] == {"n_eff": 200, "span": 210, "gap_ratio": 10 / 210, "liquidity": "high"}
    assert event["value"] == "0.5000000000"
    assert client_for(bob).get("/api/v1/alert-events").json()["results"] == []


def test_the_alert_history_comes_in_cursor_pages_newest_first(alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(user=alice, instrument=btc, timeframe="1h", kind="macdv")
    events = AlertEvent.objects.bulk_create(
        AlertEvent(
            rule=rule, user=alice, symbol="BTCUSD", timeframe="1h", bar_start=f"2026-01-01T{i:02}:00Z",
            label="macdv_below_-150", title=f"bar {i}", value=-160, direction="down",
        )
        for i in range(5)
    )  # fmt: skip
    client = client_for(alice)
    page = client.get("/api/v1/alert-events", {"limit": 2}).json()
    seen = [e["id"] for e in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [e["id"] for e in page["results"]]
    assert seen == [e.pk for e in reversed(events)]
    assert page["previous"] is not None


def test_the_webhook_url_is_encrypted_at_rest(alice: Any) -> None:
    url = "https://discord.com/api/webhooks/123/secret-token-value"
    client_for(alice).post("/api/v1/alert-channels", {"name": "desk", "webhook_url": url}, format="json")
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_url FROM alerts_notificationchannel")
        (stored,) = cursor.fetchone()
    assert "secret-token-value" not in stored and stored.startswith("gAAAA")


def test_the_admin_pages_render_and_never_show_the_webhook_url(
    admin_client: Any, alice: Any, btc: Instrument
) -> None:
    channel = NotificationChannel.objects.create(
        user=alice, name="desk", webhook_url="https://discord.com/api/webhooks/1/secret-token-value"
    )
    AlertRule.objects.create(user=alice, instrument=btc, timeframe="1h", kind="macdv")
    for model in ("alertrule", "notificationchannel", "alertevent", "notification", "alertseriesstate"):
        assert admin_client.get(reverse(f"admin:alerts_{model}_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:alerts_notificationchannel_change", args=[channel.pk]))
    assert page.status_code == 200 and "secret-token-value" not in page.content.decode()


def test_the_admin_keeps_the_webhook_url_when_the_box_is_left_empty(admin_client: Any, alice: Any) -> None:
    channel = NotificationChannel.objects.create(
        user=alice, name="desk", webhook_url="https://discord.com/api/webhooks/1/keep"
    )
    response = admin_client.post(
        reverse("admin:alerts_notificationchannel_change", args=[channel.pk]),
        {"user": alice.pk, "name": "renamed", "kind": "discord", "enabled": "on", "new_webhook_url": ""},
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.webhook_url) == ("renamed", "https://discord.com/api/webhooks/1/keep")
    bad = admin_client.post(
        reverse("admin:alerts_notificationchannel_change", args=[channel.pk]),
        {"user": alice.pk, "name": "x", "kind": "discord", "new_webhook_url": "https://evil.example.com/x"},
    )
    assert bad.status_code == 200 and "Must be a Discord webhook URL" in bad.content.decode()


def test_the_admin_edits_a_rule_through_the_service(admin_client: Any, alice: Any, btc: Instrument) -> None:
    rule = AlertRule.objects.create(
        user=alice,
        instrument=btc,
        timeframe="1h",
        condition="greater_than",
        threshold=5,
        state={"last_bar": 1},
    )
    form = {
        "user": alice.pk, "name": "", "instrument": btc.pk, "timeframe": "1h", "kind": "condition",
        "source": "price", "condition": "greater_than", "threshold": "6", "upper": "", "other": "",
        "bars": 1, "frequency": "once_per_bar_close", "expires_at_0": "", "expires_at_1": "",
        "status": "active",
    }  # fmt: skip
    response = admin_client.post(reverse("admin:alerts_alertrule_change", args=[rule.pk]), form)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.threshold == 6 and rule.state == {}
    invalid = admin_client.post(
        reverse("admin:alerts_alertrule_change", args=[rule.pk]), {**form, "condition": "entering_channel"}
    )
    assert invalid.status_code == 200 and "A channel needs its upper bound." in invalid.content.decode()
