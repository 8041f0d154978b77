"""Model signal receivers: any change to a user, a group, a permission or the links between them
moves the permissions version on (users/backends.py), and any change to an API key the API keys'
(users/authentication.py)."""

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db.models.signals import m2m_changed, post_delete, post_save

from kernel import versions
from users.authentication import API_KEYS_VERSION
from users.backends import PERMISSIONS_VERSION
from users.models import ApiKey, User

# What a login writes (django.contrib.auth's update_last_login): it changes no right and no key, and
# moving the version on would have every process read every user's permissions and every bot's key
# again at each operator's login.
LOGIN_ONLY = frozenset({"last_login"})


def _permissions_changed(sender: type, **kwargs: Any) -> None:
    if kwargs.get("update_fields") == LOGIN_ONLY:
        return
    versions.bump_on_commit(PERMISSIONS_VERSION)


for _model in (User, Group, Permission):
    post_save.connect(_permissions_changed, sender=_model, dispatch_uid=f"permissions-{_model.__name__}")
    post_delete.connect(_permissions_changed, sender=_model, dispatch_uid=f"permissions-{_model.__name__}")
for _through in (User.groups.through, User.user_permissions.through, Group.permissions.through):
    m2m_changed.connect(
        _permissions_changed, sender=_through, dispatch_uid=f"permissions-{_through.__name__}"
    )


def _api_keys_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(API_KEYS_VERSION)


post_save.connect(_api_keys_changed, sender=ApiKey, dispatch_uid="api-keys-save")
post_delete.connect(_api_keys_changed, sender=ApiKey, dispatch_uid="api-keys-delete")
