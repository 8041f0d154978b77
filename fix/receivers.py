"""Model signal receivers: a change to a routing rule moves the routing version on
(kernel/versions.py), which retires the rules each process keeps (fix.selectors.routing_rule_match).
A missing version (Redis emptied) is seeded by the reader, as for the trading states."""

from typing import Any

from django.db.models.signals import post_delete, post_save

from kernel import versions

from .models import RoutingRule
from .selectors import ROUTING_VERSION


def _routing_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ROUTING_VERSION)


post_save.connect(_routing_changed, sender=RoutingRule, dispatch_uid="routing-version-save")
post_delete.connect(_routing_changed, sender=RoutingRule, dispatch_uid="routing-version-delete")
