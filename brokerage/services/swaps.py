"""Swaps: the daily accrual job over open positions."""

from datetime import date

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import pricing
from ..models import Position, PositionStatus
from ..quotes import QuoteSource
from ..selectors import Conditions
from .dealing import _charge_swaps
from .events import Outbox
from .locks import _lock_account


def swaps_accrue(*, day: date | None = None, quotes: QuoteSource | None = None) -> int:
    """Charge (or pay) swaps on positions held over the daily rollovers (settings.SWAP_ROLLOVER_HOUR_UTC)
    up to the rollover of `day` (default: the last one passed) that were not charged yet.

    A position takes part in each rollover it was open at, on the volume it held then: opened before
    it, and charged here if still open, else by its close (a close or a netting add between a
    rollover and this job charges that rollover first, see _swaps_before_volume_change). Per lot
    per day, from the group's instrument settings, times pricing.swap_days (three days on the triple
    weekday of five-day markets, none on their weekends). Exactly once per rollover: a position's
    swap_through (the last rollover date charged) only moves forward, by a conditional update."""
    hour = settings.SWAP_ROLLOVER_HOUR_UTC
    day = day or pricing.rollover_day(timezone.now(), hour)
    due = (
        Position.objects.filter(status=PositionStatus.OPEN, opened_at__lt=pricing.rollover_at(day, hour))
        .filter(Q(swap_through__isnull=True) | Q(swap_through__lt=day))
        .values_list("pk", "account_id")
        .order_by("account_id", "pk")
    )
    charged = 0
    for position_id, account_id in list(due):
        with transaction.atomic():
            charged += _swap_position(position_id, account_id, day, hour)
    return charged


def _swap_position(position_id: int, account_id: int, day: date, hour: int) -> int:
    locked = _lock_account(account_id)
    position = Position.objects.select_related("instrument").get(pk=position_id)
    if position.status != PositionStatus.OPEN:
        return 0
    outbox = Outbox(locked)
    charged = _charge_swaps(locked, Conditions(locked.group), position, day, hour, outbox)
    outbox.commit()
    return int(charged)
