from django.db.models import QuerySet

from livermore.users.models import User

from .models import CoinbaseLink, CoinbaseOrder, Holding

ORDERS_SHOWN = 200


def coinbase_link_for(*, user: User) -> CoinbaseLink | None:
    return CoinbaseLink.objects.filter(user=user).first()


def holdings_for(*, user: User) -> QuerySet[Holding]:
    return Holding.objects.filter(user=user).order_by("currency")


def coinbase_orders_for(*, user: User) -> QuerySet[CoinbaseOrder]:
    return CoinbaseOrder.objects.filter(user=user).order_by("-created_time")[:ORDERS_SHOWN]


def coinbase_links_to_sync() -> list[int]:
    return list(CoinbaseLink.objects.filter(enabled=True, user__is_active=True).values_list("pk", flat=True))
