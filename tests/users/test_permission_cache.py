"""Permission sets are kept per process, and every committed change to them holds at once."""

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group, Permission

from kernel import versions
from users import backends
from users.backends import PERMISSIONS_VERSION
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)

PERM = "alerts.view_signals"


@pytest.fixture
def view_signals() -> Permission:
    return Permission.objects.get(codename="view_signals", content_type__app_label="alerts")


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # a new instance, as each request loads


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    compute: Callable[[int], frozenset[str]] = backends._permissions.compute
    monkeypatch.setattr(backends._permissions, "compute", lambda pk: calls.append(pk) or compute(pk))
    return calls


def test_a_user_s_permissions_are_read_once_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    user = User.objects.create_user("analyst", password="a-long-password-1")
    assert versions.read((PERMISSIONS_VERSION,)) is not None  # the user's creation moved it on
    calls = counting(monkeypatch)
    assert [fresh(user).has_perm(PERM) for _ in range(3)] == [False] * 3
    assert calls == [user.pk]


def test_a_grant_and_a_revocation_hold_from_the_next_request(view_signals: Permission) -> None:
    user = User.objects.create_user("analyst", password="a-long-password-1")
    assert not fresh(user).has_perm(PERM)
    user.user_permissions.add(view_signals)
    assert fresh(user).has_perm(PERM)
    user.user_permissions.remove(view_signals)
    assert not fresh(user).has_perm(PERM)


def test_group_membership_and_group_rights_hold_at_once(view_signals: Permission) -> None:
    user = User.objects.create_user("analyst", password="a-long-password-1")
    group = Group.objects.create(name="analysts")
    user.groups.add(group)
    assert not fresh(user).has_perm(PERM)
    group.permissions.add(view_signals)
    assert fresh(user).has_perm(PERM)
    user.groups.remove(group)
    assert not fresh(user).has_perm(PERM)


def test_deactivation_and_superuser_flags_hold_at_once() -> None:
    user = User.objects.create_user("analyst", password="a-long-password-1")
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    assert fresh(user).has_perm(PERM)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert not fresh(user).has_perm(PERM)


def test_a_login_keeps_the_kept_permissions(monkeypatch: pytest.MonkeyPatch, client) -> None:  # type: ignore[no-untyped-def]
    """A login writes last_login only: no right changed, so no process reads them again; any other
    write to the user still moves the version on."""
    user = User.objects.create_user("analyst", password="a-long-password-1", is_staff=True)
    calls = counting(monkeypatch)
    assert not fresh(user).has_perm(PERM)
    before = versions.read((PERMISSIONS_VERSION,))
    client.force_login(user)  # sends user_logged_in: update_last_login saves last_login alone
    assert User.objects.get(pk=user.pk).last_login is not None
    assert versions.read((PERMISSIONS_VERSION,)) == before
    assert not fresh(user).has_perm(PERM)
    assert calls == [user.pk]
    user.is_active = False
    user.save(update_fields=["is_active", "last_login"])
    assert versions.read((PERMISSIONS_VERSION,)) != before
