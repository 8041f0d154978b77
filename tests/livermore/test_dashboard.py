"""The dashboard on the admin index: each panel reads what the desk needs to watch now."""

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts.models import Notification, NotificationChannel, SystemNotice
from brokerage import services
from brokerage.models import ClientGroup, TradingAccount
from fix.channels import state_key
from fix.demo import fix_demo_seed
from kernel.redis import key, sync_client
from marketdata.demo import demo_seed
from tests.support.trading import open_account
from users.models import User

pytestmark = pytest.mark.django_db


def panels(browser: Client) -> dict[str, Any]:
    response = browser.get(reverse("admin_dashboard"))
    assert response.status_code == 200
    return dict(response.json()["tables"])


def test_an_idle_desk_shows_every_panel_empty_with_why(admin_client: Client) -> None:
    tables = panels(admin_client)
    assert tables["feed_health"]["rows"] == []
    assert "runmarket" in tables["feed_health"]["empty"]
    assert [tables[name]["rows"] for name in ("exposure", "margin_call", "four_eyes")] == [[], [], []]
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert 'data-table="notification_failures"' in index and reverse("admin_dashboard") in index


def test_each_panel_shows_what_needs_watching(
    admin_client: Client, admin_user: User, alice: User, settings: Any
) -> None:
    demo_seed()
    session = fix_demo_seed()
    now_ms = time.time_ns() // 1_000_000
    redis = sync_client()
    redis.set(
        key("venue-health"),
        json.dumps(
            [
                {
                    "venue": "sim",
                    "kind": "simulator",
                    "state": "connected",
                    "connects": 1,
                    "reconnects": 2,
                    "throttled": 0,
                    "messages": 10,
                    "silent_ms": 100,
                    "last_error": "",
                    "last_error_ms": None,
                    "exported_ms": now_ms,
                }
            ]
        ),
    )
    health = {"age_ms": 5, "silent_ms": 5, "exported_ms": now_ms, "venue": "sim"}
    redis.set(
        key("feed-health"),
        json.dumps(
            [
                {**health, "symbol": "EURUSD", "state": "selected"},
                {**health, "symbol": "BTCUSD", "state": "stale"},
            ]
        ),
    )
    redis.set(
        state_key(session.name), json.dumps({"logged_on": True, "next_in": 7, "next_out": 9, "logons": 1})
    )

    group = ClientGroup.objects.create(name="standard", currency="USD", leverage=100)
    account = open_account(alice, group, "1000")
    TradingAccount.objects.filter(pk=account.pk).update(margin_call_at=timezone.now())
    settings.FOUR_EYES_THRESHOLD = "500"
    pending = services.cash_operation_create(
        account=account, kind="deposit", amount=Decimal("900"), actor=admin_user
    )
    channel = NotificationChannel.objects.create(
        user=admin_user, name="desk", webhook_url="https://discord.com/api/webhooks/1/x"
    )
    notice = SystemNotice.objects.create(kind=SystemNotice._meta.get_field("kind").choices[0][0])
    failed = Notification.objects.create(
        system_notice=notice,
        channel=channel,
        status=Notification.Status.FAILED,
        attempts=5,
        last_error="HTTP 404",
    )

    tables = panels(admin_client)
    (venue,) = tables["feed_health"]["rows"]
    assert venue[0]["text"] == "sim" and venue[2:6] == ["connected", "1 / 2", venue[4], "2"]
    (fix_row,) = tables["fix_sessions"]["rows"]
    assert fix_row[0]["text"] == session.name and fix_row[2:5] == ["logged on", "7", "9"]
    (margin,) = tables["margin_call"]["rows"]
    assert margin[0] == {
        "text": str(account),
        "href": reverse("admin:brokerage_tradingaccount_change", args=[account.pk]),
    }
    (queued,) = tables["four_eyes"]["rows"]
    assert queued[0]["href"] == reverse("admin:brokerage_cashoperation_change", args=[pending.pk])
    assert queued[2] == "900.00000000 USD"
    (dead,) = tables["notification_failures"]["rows"]
    assert dead[0]["href"] == reverse("admin:alerts_notification_change", args=[failed.pk])
    assert dead[2:4] == ["5", "HTTP 404"]
