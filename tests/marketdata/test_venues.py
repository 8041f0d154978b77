import json

import pytest
from django.urls import reverse

from marketdata.adapters import ADAPTERS
from marketdata.adapters.base import VenueConfig
from marketdata.models import Venue
from marketdata.selectors import venue_config
from users.models import AuditLog

from .conftest import simulator_venue

SECRET = "-----BEGIN PRIVATE KEY-----not-a-real-key"


def test_a_venue_configs_repr_never_shows_its_credentials():
    config = VenueConfig(code="cb", kind="coinbase", credentials={"private_key_pem": SECRET})
    assert SECRET not in repr(config) and "private_key_pem" not in repr(config)
    assert config.credentials["private_key_pem"] == SECRET


@pytest.mark.django_db
def test_stored_credentials_stay_out_of_the_repr_of_the_config_adapters_get(eurusd):
    venue = simulator_venue("sim", priority=1, symbols=[eurusd])
    venue.credentials = json.dumps({"token": SECRET})
    venue.save()
    assert SECRET not in repr(venue_config(venue))


@pytest.mark.django_db
def test_the_admin_refuses_a_venue_kind_with_no_adapter(admin_client, monkeypatch):
    monkeypatch.delitem(ADAPTERS, "fix")  # a build without the FIX adapter
    data = {
        "code": "lp-fix",
        "name": "FIX LP",
        "kind": "fix",
        "enabled": "on",
        "priority": "1",
        "stale_after_ms": "5000",
        "config": "{}",
        "new_credentials": "",
        "symbols-TOTAL_FORMS": "0",
        "symbols-INITIAL_FORMS": "0",
    }
    response = admin_client.post(reverse("admin:marketdata_venue_add"), data)
    assert response.status_code == 200
    assert "kind" in response.context["adminform"].form.errors
    assert not Venue.objects.exists()
    data["kind"] = "simulator"
    assert admin_client.post(reverse("admin:marketdata_venue_add"), data).status_code == 302
    assert Venue.objects.filter(code="lp-fix", kind="simulator").exists()


@pytest.mark.django_db
def test_enabling_and_disabling_venues_from_the_admin_is_audited(admin_client, admin_user, eurusd):
    a = simulator_venue("lp-a", priority=1, symbols=[eurusd])
    b = simulator_venue("lp-b", priority=2, symbols=[eurusd])
    url = reverse("admin:marketdata_venue_changelist")
    admin_client.post(url, {"action": "disable", "_selected_action": [a.pk, b.pk]})
    admin_client.post(url, {"action": "disable", "_selected_action": [a.pk]})  # already disabled
    admin_client.post(url, {"action": "enable", "_selected_action": [b.pk]})
    assert list(Venue.objects.order_by("code").values_list("code", "enabled")) == [
        ("lp-a", False),
        ("lp-b", True),
    ]
    entries = AuditLog.objects.order_by("id").values_list("actor", "action", "object_repr")
    assert list(entries) == [
        (admin_user.pk, "venue.disable", "lp-a"),
        (admin_user.pk, "venue.disable", "lp-b"),
        (admin_user.pk, "venue.enable", "lp-b"),
    ]
