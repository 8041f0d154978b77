import time
import uuid
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from tests.support.users import PASSWORD
from users.models import User

pytestmark = pytest.mark.django_db


def login(api: APIClient, username: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    response = api.post("/api/v1/auth/token", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def crafted(user: User, *, key: str | None, algorithm: str, **overrides: object) -> str:
    now = int(time.time())
    payload = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": str(user.pk),
        "hash_password": get_md5_hash_password(user.password),
        **overrides,
    }
    return jwt.encode(payload, key, algorithm=algorithm)


def me(api: APIClient, token: str) -> tuple[int, dict]:
    response = api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    return response.status_code, response.json()


def test_it_logs_in_and_serves_me(api: APIClient, alice: User) -> None:
    tokens = login(api)
    assert set(tokens) == {"access", "refresh"}
    status, body = me(api, tokens["access"])
    assert status == 200
    assert body["username"] == "alice"
    assert body["is_staff"] is False
    assert "password" not in body


def test_it_rejects_a_wrong_password_with_the_error_shape(api: APIClient, alice: User) -> None:
    response = api.post("/api/v1/auth/token", {"username": "alice", "password": "nope"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_active_account"
    assert "nope" not in response.content.decode()


def test_it_refuses_unauthenticated_requests(api: APIClient, alice: User) -> None:
    response = api.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_it_accepts_a_token_signed_with_the_configured_key(api: APIClient, alice: User) -> None:
    assert me(api, crafted(alice, key=settings.JWT_SIGNING_KEY, algorithm="HS256"))[0] == 200


def test_it_rejects_alg_none(api: APIClient, alice: User) -> None:
    status, body = me(api, crafted(alice, key=None, algorithm="none"))
    assert status == 401
    assert body["error"]["code"] == "token_not_valid"


def test_it_rejects_a_token_signed_with_another_key(api: APIClient, alice: User) -> None:
    status, body = me(api, crafted(alice, key="another key that is long enough!!", algorithm="HS256"))
    assert status == 401
    assert body["error"]["code"] == "token_not_valid"


def test_it_rejects_another_algorithm_even_with_the_right_key(api: APIClient, alice: User) -> None:
    assert me(api, crafted(alice, key=settings.JWT_SIGNING_KEY, algorithm="HS512"))[0] == 401


def test_it_rejects_an_expired_token(api: APIClient, alice: User) -> None:
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=-timedelta(seconds=1))
    status, body = me(api, str(token))
    assert status == 401
    assert body["error"]["code"] == "token_not_valid"


def test_access_tokens_are_short_lived(api: APIClient, alice: User) -> None:
    access = jwt.decode(login(api)["access"], options={"verify_signature": False})
    assert access["exp"] - access["iat"] <= 5 * 60


def test_it_rejects_a_refresh_token_used_as_access_token(api: APIClient, alice: User) -> None:
    assert me(api, login(api)["refresh"])[0] == 401


def test_it_rejects_a_token_of_a_deactivated_user(api: APIClient, alice: User) -> None:
    access = login(api)["access"]
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert me(api, access)[0] == 401


def test_a_password_change_ends_every_access_token_at_once(api: APIClient, alice: User) -> None:
    before = login(api)
    alice.set_password("a new password, long enough")
    alice.save()
    status, body = me(api, before["access"])
    assert status == 401
    assert body["error"]["message"] == "The user's password has been changed."
    assert me(api, login(api, password="a new password, long enough")["access"])[0] == 200


def test_a_token_without_the_password_claim_is_refused(api: APIClient, alice: User) -> None:
    assert (
        me(api, crafted(alice, key=settings.JWT_SIGNING_KEY, algorithm="HS256", hash_password=None))[0] == 401
    )


def test_an_access_token_refreshed_from_before_a_password_change_is_refused(
    api: APIClient, alice: User
) -> None:
    refresh = login(api)["refresh"]
    User.objects.filter(pk=alice.pk).update(password="!")  # no signal: the refresh token stays valid
    response = api.post("/api/v1/auth/token/refresh", {"refresh": refresh}, format="json")
    assert response.status_code == 200
    assert me(api, response.json()["access"])[0] == 401


def test_refresh_rotates_and_blacklists_the_old_refresh_token(api: APIClient, alice: User) -> None:
    first = login(api)["refresh"]
    response = api.post("/api/v1/auth/token/refresh", {"refresh": first}, format="json")
    assert response.status_code == 200
    rotated = response.json()
    assert rotated["refresh"] != first
    assert me(api, rotated["access"])[0] == 200

    replay = api.post("/api/v1/auth/token/refresh", {"refresh": first}, format="json")
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "token_not_valid"
    again = api.post("/api/v1/auth/token/refresh", {"refresh": rotated["refresh"]}, format="json")
    assert again.status_code == 200


def test_revoke_blacklists_the_refresh_token(api: APIClient, alice: User) -> None:
    refresh = login(api)["refresh"]
    response = api.post("/api/v1/auth/token/revoke", {"refresh": refresh}, format="json")
    assert response.status_code == 204
    again = api.post("/api/v1/auth/token/refresh", {"refresh": refresh}, format="json")
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "token_not_valid"


def test_revoke_rejects_garbage(api: APIClient, alice: User) -> None:
    response = api.post("/api/v1/auth/token/revoke", {"refresh": "not-a-token"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def test_login_requires_both_fields(api: APIClient, alice: User) -> None:
    response = api.post("/api/v1/auth/token", {"username": "alice"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["password"]


def test_a_password_change_revokes_every_refresh_token(api: APIClient, alice: User) -> None:
    refresh = [
        api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()[
            "refresh"
        ]
        for _ in range(2)
    ]
    alice.set_password("a whole new passphrase")
    alice.save()
    for token in refresh:
        response = api.post("/api/v1/auth/token/refresh", {"refresh": token}, format="json")
        assert response.status_code == 401


def test_a_deactivation_revokes_every_refresh_token(api: APIClient, alice: User) -> None:
    token = api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()
    alice.is_active = False
    alice.save()
    alice.is_active = True
    alice.save(update_fields=["is_active"])
    response = api.post("/api/v1/auth/token/refresh", {"refresh": token["refresh"]}, format="json")
    assert response.status_code == 401


def test_saving_a_user_without_a_credential_change_keeps_their_tokens(api: APIClient, alice: User) -> None:
    token = api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()
    alice.first_name = "Alice"
    alice.save()
    response = api.post("/api/v1/auth/token/refresh", {"refresh": token["refresh"]}, format="json")
    assert response.status_code == 200
