"""Model signal receivers that move data versions on (kernel/versions.py):
- any change to a user's alert preferences, their default symbols included, moves the alert
  preferences version, which retires the defaults each process keeps (alerts.selectors.default_series);
- a change to an alert rule moves the alert rules version, which retires the compiled rules each
  process keeps for bar closes (alerts.services.evaluation)."""

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from kernel import versions

from .models import AlertPreferences, AlertRule
from .selectors import ALERT_PREFERENCES_VERSION, ALERT_RULES_VERSION


def _preferences_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ALERT_PREFERENCES_VERSION)


def _rules_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ALERT_RULES_VERSION)


post_save.connect(_preferences_changed, sender=AlertPreferences, dispatch_uid="alert-preferences-save")
post_delete.connect(_preferences_changed, sender=AlertPreferences, dispatch_uid="alert-preferences-delete")
m2m_changed.connect(
    _preferences_changed,
    sender=AlertPreferences.default_symbols.through,
    dispatch_uid="alert-preferences-symbols",
)
post_save.connect(_rules_changed, sender=AlertRule, dispatch_uid="alert-rules-version-save")
post_delete.connect(_rules_changed, sender=AlertRule, dispatch_uid="alert-rules-version-delete")
