"""Model signal receivers: any change to a user's alert preferences, their default symbols included,
moves the alert preferences version on (kernel/versions.py), which retires the defaults each process
keeps (alerts.selectors.default_series)."""

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from kernel import versions

from .models import AlertPreferences
from .selectors import ALERT_PREFERENCES_VERSION


def _preferences_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ALERT_PREFERENCES_VERSION)


post_save.connect(_preferences_changed, sender=AlertPreferences, dispatch_uid="alert-preferences-save")
post_delete.connect(_preferences_changed, sender=AlertPreferences, dispatch_uid="alert-preferences-delete")
m2m_changed.connect(
    _preferences_changed,
    sender=AlertPreferences.default_symbols.through,
    dispatch_uid="alert-preferences-symbols",
)
