"""Credentials go only where they belong: no environment variable but a LIVERMORE_SECRET_ one, and a
new destination needs the credentials entered again."""

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from fix.models import FixSession
from fix.selectors import fix_session_configs
from marketdata.models import Venue, VenueKind
from tests.support.users import grant, make_role_user
from users.roles import RISK

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(make_session: Callable[..., FixSession]) -> FixSession:
    return make_session(9, role="trading", venue=None)


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "JWT_SIGNING_KEY", "LIVERMORE_SECRET_"])
def test_naming_the_servers_own_secrets_is_refused(
    session: FixSession, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session.password_env = name
    with pytest.raises(ValidationError) as refused:
        session.full_clean()
    assert refused.value.message_dict == {
        "password_env": ["Only environment variables named LIVERMORE_SECRET_<NAME> may hold a credential."]
    }
    monkeypatch.setenv(name, "the server's own secret")
    FixSession.objects.filter(pk=session.pk).update(password_env=name)  # past the form, as a raw write
    assert [c.password for c in fix_session_configs()] == [""]


def test_a_prefixed_variable_is_read(session: FixSession, monkeypatch: pytest.MonkeyPatch) -> None:
    session.password_env = "LIVERMORE_SECRET_LP1"
    session.full_clean()
    session.save()
    monkeypatch.setenv("LIVERMORE_SECRET_LP1", "from-the-environment")
    assert [c.password for c in fix_session_configs()] == ["from-the-environment"]


@pytest.mark.parametrize(
    "change", [{"host": "203.0.113.9"}, {"port": 9999}, {"tls": True}, {"tls_ca_file": "/tmp/mine.pem"}]
)
def test_a_new_destination_clears_the_password(session: FixSession, change: dict[str, Any]) -> None:
    session = FixSession.objects.get(pk=session.pk)
    session.password_env = "LIVERMORE_SECRET_LP1"
    session.save()
    for field, value in change.items():
        setattr(session, field, value)
    session.save()
    stored = FixSession.objects.get(pk=session.pk)
    assert (stored.password, stored.password_env) == ("", "")


def test_a_new_password_entered_with_the_new_host_is_kept(session: FixSession) -> None:
    session = FixSession.objects.get(pk=session.pk)
    session.host, session.password = "203.0.113.9", "the new LP's password"
    session.save()
    assert FixSession.objects.get(pk=session.pk).password == "the new LP's password"


def test_other_changes_keep_the_password(session: FixSession) -> None:
    session = FixSession.objects.get(pk=session.pk)
    session.heartbeat_s = 20
    session.save(update_fields=["heartbeat_s"])
    assert FixSession.objects.get(pk=session.pk).password == PASSWORD


def test_a_venues_new_url_clears_its_credentials() -> None:
    secret = json.dumps({"token": "oanda-token"})
    venue = Venue.objects.create(
        code="oanda", name="OANDA", kind=VenueKind.OANDA, config={"account_id": "1"}, credentials=secret
    )
    venue = Venue.objects.get(pk=venue.pk)
    venue.config = {"account_id": "2"}
    venue.save()
    assert Venue.objects.get(pk=venue.pk).credentials == secret
    venue.config = {"account_id": "2", "stream_url": "https://collector.example"}
    venue.save()
    assert Venue.objects.get(pk=venue.pk).credentials == ""


def test_only_a_holder_of_set_password_env_names_an_environment_password(
    client: Client, session: FixSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A risk operator may change a session but not aim another session's LP password at a host of
    their choosing: the field is read-only for them, and a new host clears what the session had."""
    monkeypatch.setenv("LIVERMORE_SECRET_LP1", "the desk's LP1 password")
    risk = make_role_user("risk", RISK)
    client.force_login(risk)
    url = reverse("admin:fix_fixsession_change", args=[session.pk])
    form = client.get(url).context["adminform"].form
    assert "password_env" not in form.fields
    data = {k: v for k, v in form.initial.items() if v is not None and k in form.fields}
    data.update({"new_password": "", "start_time": "", "end_time": "", "host": "203.0.113.9"})
    data["password_env"] = "LIVERMORE_SECRET_LP1"
    assert client.post(url, data).status_code == 302
    stored = FixSession.objects.get(pk=session.pk)
    assert (stored.host, stored.password, stored.password_env) == ("203.0.113.9", "", "")
    assert [c.password for c in fix_session_configs()] == [""]

    client.force_login(grant(risk, "fix.set_password_env"))
    form = client.get(url).context["adminform"].form
    assert "password_env" in form.fields
    data = {k: v for k, v in form.initial.items() if v is not None and k in form.fields}
    data.update(
        {"new_password": "", "start_time": "", "end_time": "", "password_env": "LIVERMORE_SECRET_LP1"}
    )
    assert client.post(url, data).status_code == 302
    assert [c.password for c in fix_session_configs()] == ["the desk's LP1 password"]
