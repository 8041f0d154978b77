import pytest
from django.test import Client
from pytest_django import Settings
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from tests.support.users import PASSWORD
from users.models import User

pytestmark = pytest.mark.django_db


def token_attempt(api: APIClient, password: str, username: str = "alice") -> tuple[int, dict]:
    response = api.post("/api/v1/auth/token", {"username": username, "password": password}, format="json")
    return response.status_code, response.json()


def test_the_token_endpoint_locks_out_after_repeated_failures(
    api: APIClient, alice: User, settings: Settings
) -> None:
    statuses = [token_attempt(api, f"wrong {i}")[0] for i in range(settings.AXES_FAILURE_LIMIT - 1)]
    assert statuses == [401] * (settings.AXES_FAILURE_LIMIT - 1)

    status, body = token_attempt(api, "wrong again")
    assert status == 429
    assert body["error"]["code"] == "locked_out"
    # Even the right password is refused while locked out.
    status, body = token_attempt(api, PASSWORD)
    assert status == 429
    assert body["error"]["code"] == "locked_out"
    assert "access" not in body


def test_a_lockout_is_per_username_and_client(api: APIClient, alice: User, bob: User) -> None:
    for i in range(6):
        token_attempt(api, f"wrong {i}")
    assert token_attempt(api, PASSWORD, username="bob")[0] == 200


def test_a_success_resets_the_failure_count(api: APIClient, alice: User, settings: Settings) -> None:
    for _ in range(2):
        for i in range(settings.AXES_FAILURE_LIMIT - 1):
            assert token_attempt(api, f"wrong {i}")[0] == 401
        assert token_attempt(api, PASSWORD)[0] == 200


def test_the_admin_login_locks_out_after_repeated_failures(
    client: Client, alice: User, settings: Settings
) -> None:
    User.objects.filter(pk=alice.pk).update(is_staff=True)
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/admin/login/", {"username": "alice", "password": f"wrong {i}"})
        assert response.status_code == 200  # the form again, with an error
    response = client.post("/admin/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "locked_out"
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(
    api: APIClient, alice: User, settings: Settings
) -> None:
    for i in range(settings.AXES_FAILURE_LIMIT):
        api.post(
            "/api/v1/auth/token",
            {"username": "alice", "password": "wrong"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{i}",
        )
    assert token_attempt(api, PASSWORD)[0] == 429


def test_auth_endpoints_have_their_own_throttle(
    api: APIClient, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", "3/min")
    refresh = [
        api.post("/api/v1/auth/token/refresh", {"refresh": "garbage"}, format="json").status_code
        for _ in range(4)
    ]
    assert refresh == [401, 401, 401, 429]
    response = api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"


def test_cors_allows_no_origin_by_default(api: APIClient, alice: User) -> None:
    response = api.options(
        "/api/v1/auth/token",
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_a_listed_origin(api: APIClient, alice: User, settings: Settings) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://desk.example"]
    allowed = api.options(
        "/api/v1/auth/token",
        HTTP_ORIGIN="https://desk.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert allowed.headers["access-control-allow-origin"] == "https://desk.example"
    other = api.get("/api/v1/me", HTTP_ORIGIN="https://evil.example")
    assert "access-control-allow-origin" not in other.headers


def test_no_response_carries_a_password_or_its_hash(api: APIClient, alice: User) -> None:
    alice.refresh_from_db()
    bodies = [
        api.post("/api/v1/auth/token", {"username": "alice", "password": "x" * 40}, format="json"),
        api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json"),
    ]
    api.force_authenticate(alice)
    bodies += [
        api.get("/api/v1/me"),
        api.post("/api/v1/api-keys", {"name": "bot"}, format="json"),
        api.get("/api/v1/api-keys"),
        api.post("/api/v1/api-keys", {"name": ""}, format="json"),
    ]
    for response in bodies:
        text = response.content.decode()
        assert PASSWORD not in text
        assert "x" * 40 not in text
        assert alice.password not in text
        assert "password" not in response.json() if response.status_code == 200 else True
