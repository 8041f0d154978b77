"""Model signal receivers: a change to a routing rule moves the routing version on
(kernel/versions.py), which retires the rules each process keeps (fix.selectors.routing_rule_match).
A migration gives the version its first value: without one (Redis emptied, nothing saved since) the
rules are read with every order, as nothing may be cached under a missing version."""

from typing import Any

from django.apps import apps
from django.db.models.signals import post_delete, post_migrate, post_save

from kernel import versions

from .models import RoutingRule
from .selectors import ROUTING_VERSION


def _routing_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ROUTING_VERSION)


post_save.connect(_routing_changed, sender=RoutingRule, dispatch_uid="routing-version-save")
post_delete.connect(_routing_changed, sender=RoutingRule, dispatch_uid="routing-version-delete")
post_migrate.connect(
    _routing_changed, sender=apps.get_app_config("fix"), dispatch_uid="routing-version-migrate"
)
