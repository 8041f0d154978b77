"""Model signal receivers: a change to a client group or to its per-instrument settings moves the
groups' data version on (kernel/versions.py), which retires the conditions the order path keeps; a
trading account saved or deleted moves the accounts' one on, which retires the kept identities."""

from typing import Any

from django.db.models.signals import post_delete, post_save

from kernel import versions

from .models import ClientGroup, GroupInstrument, TradingAccount
from .selectors import ACCOUNTS_VERSION, GROUPS_VERSION


def _groups_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(GROUPS_VERSION)


for _model in (ClientGroup, GroupInstrument):
    post_save.connect(_groups_changed, sender=_model, dispatch_uid=f"groups-version-save-{_model.__name__}")
    post_delete.connect(
        _groups_changed, sender=_model, dispatch_uid=f"groups-version-delete-{_model.__name__}"
    )


def _accounts_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(ACCOUNTS_VERSION)


post_save.connect(_accounts_changed, sender=TradingAccount, dispatch_uid="accounts-version-save")
post_delete.connect(_accounts_changed, sender=TradingAccount, dispatch_uid="accounts-version-delete")
