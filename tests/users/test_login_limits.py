import pytest
from django.test import Client
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.support.users import PASSWORD
from users.models import User

pytestmark = pytest.mark.django_db


def test_failed_logins_from_one_address_across_usernames_lock_that_address_out(
    api: APIClient, alice: User, settings: Settings
) -> None:
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    for name in ("root", "admin", "bob"):
        response = api.post(
            "/api/v1/auth/token", {"username": name, "password": "Winter2026!"}, format="json"
        )
        assert response.status_code == 401
    response = api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "locked_out"
    other = APIClient(REMOTE_ADDR="192.0.2.77")
    response = other.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200


def test_the_admin_login_shares_the_per_address_cap(client: Client, alice: User, settings: Settings) -> None:
    settings.LOGIN_FAILURES_PER_ADDRESS = 2
    User.objects.filter(pk=alice.pk).update(is_staff=True)
    for name in ("root", "admin"):
        assert client.post("/admin/login/", {"username": name, "password": "x"}).status_code == 200
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
