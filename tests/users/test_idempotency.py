import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import QuerySet
from django.urls import path
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from kernel.errors import ServiceError
from users.idempotency import idempotent
from users.models import IdempotencyKey, User
from users.roles import ROLES
from users.services import idempotency_keys_purge


class GroupCreateView(APIView):
    """A POST with a visible side effect (a Group row), slow enough for duplicates to overlap."""

    @idempotent
    def post(self, request: Request) -> Response:
        name = request.data.get("name")
        if not name:
            raise ServiceError("invalid", "A name is required.", status_code=status.HTTP_400_BAD_REQUEST)
        if name == "boom":
            raise RuntimeError("the handler crashed")
        time.sleep(float(request.data.get("sleep", 0)))
        group = Group.objects.create(name=name)
        return Response({"id": group.pk, "name": group.name, "price": "1.10"}, status=201)


def made() -> "QuerySet[Group]":
    """The groups the view made (the operator roles are groups too)."""
    return Group.objects.exclude(name__in=list(ROLES))


urlpatterns = [
    path("groups", GroupCreateView.as_view()),
    path("groups/other", GroupCreateView.as_view()),
]

pytestmark = [pytest.mark.urls(__name__)]


def post(api: APIClient, body: dict, key: str | None = "k-1", url: str = "/groups") -> Response:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return api.post(url, body, format="json", **headers)


@pytest.fixture
def alice_api(api: APIClient, alice: User) -> APIClient:
    api.force_authenticate(alice)
    return api


@pytest.mark.django_db
def test_a_replay_returns_the_first_response(alice_api: APIClient) -> None:
    first = post(alice_api, {"name": "desk"})
    again = post(alice_api, {"name": "desk"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert made().count() == 1


@pytest.mark.django_db
def test_key_order_in_the_body_does_not_matter(alice_api: APIClient) -> None:
    first = alice_api.post(
        "/groups", b'{"name": "desk", "sleep": 0}', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    again = alice_api.post(
        "/groups", b'{"sleep":0,"name":"desk"}', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert again.status_code == 201
    assert again.json() == first.json()


@pytest.mark.django_db
def test_a_different_body_under_the_same_key_is_a_conflict(alice_api: APIClient) -> None:
    post(alice_api, {"name": "desk"})
    response = post(alice_api, {"name": "other desk"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert list(made().values_list("name", flat=True)) == ["desk"]


@pytest.mark.django_db
def test_the_same_key_on_another_path_is_a_conflict(alice_api: APIClient) -> None:
    post(alice_api, {"name": "desk"})
    response = post(alice_api, {"name": "desk"}, url="/groups/other")
    assert response.status_code == 409


@pytest.mark.django_db
def test_keys_belong_to_their_user(alice_api: APIClient, bob: User) -> None:
    post(alice_api, {"name": "alice desk"})
    bob_api = APIClient()
    bob_api.force_authenticate(bob)
    response = post(bob_api, {"name": "bob desk"})
    assert response.status_code == 201
    assert made().count() == 2


@pytest.mark.django_db
def test_without_a_key_every_request_runs(alice_api: APIClient) -> None:
    assert post(alice_api, {"name": "a"}, key=None).status_code == 201
    assert post(alice_api, {"name": "b"}, key=None).status_code == 201
    assert made().count() == 2
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_a_client_error_is_stored_and_replayed(alice_api: APIClient) -> None:
    first = post(alice_api, {"name": ""})
    again = post(alice_api, {"name": ""})
    assert first.status_code == again.status_code == 400
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_a_server_error_keeps_no_key_so_the_client_may_retry(alice: User) -> None:
    api = APIClient(raise_request_exception=False)
    api.force_authenticate(alice)
    assert post(api, {"name": "boom"}).status_code == 500
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there"])
def test_it_rejects_a_malformed_key(alice_api: APIClient, key: str) -> None:
    response = post(alice_api, {"name": "desk"}, key=key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert not made().exists()


@pytest.mark.django_db
def test_an_expired_key_can_be_used_again(alice_api: APIClient) -> None:
    post(alice_api, {"name": "desk"})
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    response = post(alice_api, {"name": "another desk"})
    assert response.status_code == 201
    assert made().count() == 2


@pytest.mark.django_db
def test_purge_deletes_only_expired_keys(alice_api: APIClient) -> None:
    post(alice_api, {"name": "old"}, key="old")
    post(alice_api, {"name": "new"}, key="new")
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_keys_purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_run_once_and_all_get_the_same_response(alice: User) -> None:
    results: list[tuple[int, dict, bool]] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        try:
            api = APIClient()
            api.force_authenticate(alice)
            barrier.wait()
            response = post(api, {"name": "desk", "sleep": 0.3}, key="race")
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            results.append((response.status_code, response.json(), replayed))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len(results) == 8
    assert {status for status, _, _ in results} == {201}
    assert len({str(body) for _, body, _ in results}) == 1
    assert sum(replayed for _, _, replayed in results) == 7
    assert Group.objects.filter(name="desk").count() == 1
    assert IdempotencyKey.objects.filter(key="race").count() == 1
