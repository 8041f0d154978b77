"""The named test users, made one way everywhere: clients, staff holding named permissions, and the
superuser operator. tests/conftest.py builds its fixtures (alice, bob, operator, staff_user) on these."""

from typing import Protocol

from django.contrib.auth.models import Permission
from django.db.models import Q

from users.models import User

PASSWORD = "correct horse battery staple"  # test-only credential for the named test users


class StaffFactory(Protocol):
    """The `staff_user` fixture: desk staff holding only the named permissions."""

    def __call__(self, *perms: str) -> User: ...


def grant(user: User, *perms: str) -> User:
    """Give `user` the named permissions ("app_label.codename"); returns a fresh instance, as Django
    caches permissions per instance."""
    if perms:
        wanted = Q()
        for perm in perms:
            app_label, codename = perm.split(".", 1)
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        found = list(Permission.objects.filter(wanted))
        missing = set(perms) - {f"{p.content_type.app_label}.{p.codename}" for p in found}
        if missing:
            raise LookupError(f"no such permission: {sorted(missing)}")
        user.user_permissions.add(*found)
    return User.objects.get(pk=user.pk)


def make_client(name: str, *, password: str | None = PASSWORD) -> User:
    """A client: no staff access. `password=None` leaves the password unusable (and skips hashing)."""
    return User.objects.create_user(name, f"{name}@example.com", password)


def make_staff(name: str, *perms: str) -> User:
    """Desk staff holding only the named permissions ("app_label.codename")."""
    return grant(User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True), *perms)


def make_operator(name: str = "ops") -> User:
    """Desk staff with every permission (a superuser)."""
    return User.objects.create_superuser(name, f"{name}@example.com", PASSWORD)


def make_role_user(name: str, *roles: str) -> User:
    """Desk staff holding the operator roles named (users/roles.py). The role groups are made again
    from the role table first: a transactional test's flush empties them."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    from users.roles import roles_sync

    roles_sync(apps)
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True)
    user.groups.set(Group.objects.filter(name__in=roles))
    return User.objects.get(pk=user.pk)  # a fresh instance: no cached permissions
