"""Django's ModelBackend with each user's permission set kept per process.

Every operator path checks a named permission, and ModelBackend reads a user's permissions with two
queries per request (their own and their groups'). Here the set is kept under the permissions
version (kernel/versions.py), which any change to a user, a group, a permission or their links moves
on after commit (users/receivers.py): a grant or a revocation holds from the next request on."""

from typing import Any

from django.contrib.auth.backends import ModelBackend

from kernel.versions import VersionedCache

PERMISSIONS_VERSION = "permissions"


class CachedPermissionsBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            user_obj._perm_cache = _permissions.get(user_obj.pk)
        return set(user_obj._perm_cache)


def _compute(user_id: int) -> frozenset[str]:
    from django.contrib.auth import get_user_model

    user = get_user_model()._default_manager.get(pk=user_id)
    return frozenset(ModelBackend().get_all_permissions(user))


_permissions: VersionedCache[int, frozenset[str]] = VersionedCache(
    (PERMISSIONS_VERSION,), _compute, size=10_000
)
