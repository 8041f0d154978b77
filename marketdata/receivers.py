"""Model signal receivers: a change to an instrument, a venue or a venue's symbol moves the market
data version on (kernel/versions.py), which retires the read caches built on them."""

from typing import Any

from django.db.models.signals import post_delete, post_save

from kernel import versions
from marketdata.models import Instrument, Venue, VenueSymbol
from marketdata.selectors import MARKET_VERSION


def _market_changed(sender: type, **kwargs: Any) -> None:
    versions.bump_on_commit(MARKET_VERSION)


for _model in (Instrument, Venue, VenueSymbol):
    post_save.connect(_market_changed, sender=_model, dispatch_uid=f"market-version-save-{_model.__name__}")
    post_delete.connect(
        _market_changed, sender=_model, dispatch_uid=f"market-version-delete-{_model.__name__}"
    )
