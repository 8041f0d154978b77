"""Alert rules as their owners change them: save (a changed definition starts afresh), delete, expire."""

import time
from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from alerts import rules
from alerts.models import AlertRule
from kernel.errors import ServiceError

# Changing any of these makes a different rule: its remembered state starts afresh.
DEFINITION_FIELDS = frozenset(
    {
        "instrument",
        "timeframe",
        "kind",
        "source",
        "condition",
        "threshold",
        "upper",
        "other",
        "bars",
        "frequency",
    }
)


def alert_rule_save(*, rule: AlertRule, changed: Iterable[str] = ()) -> AlertRule:
    """Creates a rule, or saves an edited one (its attributes already set; `changed` names them).
    A changed definition resets the rule's state; re-activating a triggered or expired rule too."""
    changed = set(changed)
    errors = rule.spec_errors()
    if rule.pk is None or "expires_at" in changed:
        expires_at = rule.expires_at.timestamp() if rule.expires_at else None
        errors |= rules.expiry_errors(expires_at=expires_at, now=time.time())
    if errors:
        raise ServiceError("invalid_rule", "The alert rule is not valid.", fields=errors, status_code=400)
    if rule.status not in (AlertRule.Status.ACTIVE, AlertRule.Status.PAUSED) and "status" in changed:
        raise ServiceError(
            "invalid_status",
            "A rule can only be set active or paused.",
            fields={"status": ["Must be active or paused."]},
            status_code=400,
        )
    if rule.pk is None:
        rule.save()
        return rule
    # Only the edited columns: the evaluators may be writing the state meanwhile.
    fields = changed | {"updated_at"}
    if changed & DEFINITION_FIELDS or "status" in changed:
        rule.state = {}
        fields.add("state")
    rule.save(update_fields=fields)
    return rule


def alert_rule_delete(*, rule: AlertRule) -> None:
    rule.delete()


def alert_rules_expire(*, now: datetime | None = None) -> int:
    """Marks active rules past their expiry expired (periodic). They stopped firing at their expiry
    already (the evaluators check it); this keeps the status their owners see true."""
    return AlertRule.objects.filter(
        status=AlertRule.Status.ACTIVE, expires_at__lte=now or timezone.now()
    ).update(status=AlertRule.Status.EXPIRED)
