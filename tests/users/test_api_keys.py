from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from kernel import throttling, versions
from users.authentication import _live_keys
from users.models import ApiKey, User
from users.services import api_key_revoke

pytestmark = pytest.mark.django_db


def with_key(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}


def test_it_creates_a_key_and_shows_the_secret_once(api: APIClient, alice: User) -> None:
    api.force_authenticate(alice)
    created = api.post("/api/v1/api-keys", {"name": "grid bot"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "grid bot"
    assert body["key"].startswith(body["prefix"] + ".")
    stored = ApiKey.objects.get(pk=body["id"])
    assert body["key"] not in (stored.hashed, stored.prefix)

    listed = api.get("/api/v1/api-keys").json()
    assert [k["id"] for k in listed] == [body["id"]]
    assert set(listed[0]) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"}
    assert body["key"] not in str(listed)
    assert stored.hashed not in str(listed)


def test_a_key_authenticates_its_owner(api: APIClient, alice: User) -> None:
    _, raw = ApiKey.issue(user=alice, name="bot")
    response = api.get("/api/v1/me", **with_key(raw))
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert ApiKey.objects.get(user=alice).last_used_at is not None


def test_it_rejects_a_revoked_key(api: APIClient, alice: User) -> None:
    key, raw = ApiKey.issue(user=alice, name="bot")
    api.force_authenticate(alice)
    revoked = api.post(f"/api/v1/api-keys/{key.pk}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    api.force_authenticate(None)

    response = api.get("/api/v1/me", **with_key(raw))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("raw", ["", "deadbeef.wrong-secret", "nodot", "x" * 500])
def test_it_rejects_an_invalid_key(api: APIClient, alice: User, raw: str) -> None:
    ApiKey.issue(user=alice, name="bot")
    response = api.get("/api/v1/me", **with_key(raw))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_it_rejects_a_right_prefix_with_a_wrong_secret(api: APIClient, alice: User) -> None:
    key, _ = ApiKey.issue(user=alice, name="bot")
    response = api.get("/api/v1/me", **with_key(f"{key.prefix}.guessed"))
    assert response.status_code == 401


def test_it_rejects_the_key_of_a_deactivated_user(api: APIClient, alice: User) -> None:
    _, raw = ApiKey.issue(user=alice, name="bot")
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 401


def test_a_user_cannot_revoke_someone_elses_key(api: APIClient, alice: User, bob: User) -> None:
    key, _ = ApiKey.issue(user=bob, name="bob's bot")
    api.force_authenticate(alice)
    response = api.post(f"/api/v1/api-keys/{key.pk}/revoke")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    assert api.get("/api/v1/api-keys").json() == []


def test_an_api_key_cannot_mint_more_keys(api: APIClient, alice: User) -> None:
    _, raw = ApiKey.issue(user=alice, name="bot")
    response = api.post("/api/v1/api-keys", {"name": "another"}, format="json", **with_key(raw))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "api_key_not_allowed"
    assert ApiKey.objects.filter(user=alice).count() == 1


def test_it_requires_a_name(api: APIClient, alice: User) -> None:
    api.force_authenticate(alice)
    response = api.post("/api/v1/api-keys", {"name": ""}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]
    assert not ApiKey.objects.exists()


def test_last_used_is_written_at_most_once_a_minute(api: APIClient, alice: User) -> None:
    key, raw = ApiKey.issue(user=alice, name="bot")
    recent = timezone.now() - timedelta(seconds=10)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=recent)
    api.get("/api/v1/me", **with_key(raw))
    assert ApiKey.objects.get(pk=key.pk).last_used_at == recent

    stale = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=stale)
    api.get("/api/v1/me", **with_key(raw))
    assert ApiKey.objects.get(pk=key.pk).last_used_at > stale


@pytest.mark.django_db(transaction=True)
def test_a_kept_key_is_refused_from_the_request_after_a_revocation_or_a_deactivation(
    api: APIClient, alice: User
) -> None:
    """Keys are kept per process under data versions: a revocation or a deactivation, once committed,
    holds from the next request on."""
    key, raw = ApiKey.issue(user=alice, name="bot")
    other, other_raw = ApiKey.issue(user=alice, name="other bot")
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 200
    assert api.get("/api/v1/me", **with_key(other_raw)).status_code == 200
    assert _live_keys._entries.keys() >= {key.prefix, other.prefix}  # kept (with earlier tests' keys)

    api_key_revoke(user=alice, key_id=key.pk)
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 401
    assert api.get("/api/v1/me", **with_key(other_raw)).status_code == 200

    alice.is_active = False
    alice.save()
    assert api.get("/api/v1/me", **with_key(other_raw)).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_kept_keys_versions_are_read_in_the_round_trip_that_checks_the_throttles(
    api: APIClient, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw = ApiKey.issue(user=alice, name="bot")
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 200  # the key is kept
    calls: list[tuple[int, int]] = []
    call = throttling._call

    def counted(guards: list[tuple[str, bytes]], windows: list[throttling.Window], now: float) -> object:
        calls.append((len(guards), len(windows)))
        return call(guards, windows, now)

    monkeypatch.setattr(throttling, "_call", counted)
    monkeypatch.setattr(versions, "mget", lambda names: pytest.fail(f"read apart: {names}"))
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 200
    assert calls == [(2, 1)]  # the api-keys and permissions versions, the user's rate


@pytest.mark.django_db(transaction=True)
def test_a_refused_keys_request_is_not_counted_against_its_users_rate(
    api: APIClient, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "2/min")
    key, raw = ApiKey.issue(user=alice, name="bot")
    _, other_raw = ApiKey.issue(user=alice, name="other bot")
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 200
    api_key_revoke(user=alice, key_id=key.pk)
    assert api.get("/api/v1/me", **with_key(raw)).status_code == 401
    assert api.get("/api/v1/me", **with_key(other_raw)).status_code == 200
    assert api.get("/api/v1/me", **with_key(other_raw)).status_code == 429
