"""Model signal receivers: a change to an alert rule moves the alert rules version on
(kernel/versions.py), which retires the compiled rules each process keeps for bar closes
(alerts.services.evaluation)."""

from typing import Any

from django.db.models.signals import post_delete, post_save

from kernel import versions

from .models import AlertRule
from .selectors import ALERT_RULES_VERSION


def _rules_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ALERT_RULES_VERSION)


post_save.connect(_rules_changed, sender=AlertRule, dispatch_uid="alert-rules-version-save")
post_delete.connect(_rules_changed, sender=AlertRule, dispatch_uid="alert-rules-version-delete")
