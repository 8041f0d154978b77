from decimal import Decimal

from django.db.models import QuerySet

from users.models import User

from . import valuation
from .models import CoinbaseFill, CoinbaseLink, CoinbaseOrder, Holding, PortfolioPrice

ORDERS_SHOWN = 200
DEFAULT_CURRENCY = "USD"


def coinbase_link_for(*, user: User) -> CoinbaseLink | None:
    return CoinbaseLink.objects.filter(user=user).first()


def holdings_for(*, user: User) -> QuerySet[Holding]:
    return Holding.objects.filter(user=user).order_by("currency")


def coinbase_orders_for(*, user: User) -> QuerySet[CoinbaseOrder]:
    return CoinbaseOrder.objects.filter(user=user).order_by("-created_time")[:ORDERS_SHOWN]


def coinbase_links_to_sync() -> list[int]:
    return list(CoinbaseLink.objects.filter(enabled=True, user__is_active=True).values_list("pk", flat=True))


def portfolio_valuation_for(*, user: User) -> valuation.Valuation:
    """The user's holdings valued from the prices and fills of their last successful sync, in their
    account currency (USD until they link Coinbase and choose another)."""
    link = coinbase_link_for(user=user)
    currency = link.currency if link is not None else DEFAULT_CURRENCY
    holdings: dict[str, Decimal] = {}
    for holding in holdings_for(user=user):
        holdings[holding.currency] = holdings.get(holding.currency, Decimal(0)) + holding.total
    fills = [
        f.as_fill()
        for f in CoinbaseFill.objects.filter(user=user).order_by("trade_time", "entry_id")
        if valuation.is_spot(f.product_id)
    ]
    prices = list(PortfolioPrice.objects.filter(user=user))
    books = {p.product_id: valuation.Book(bid=p.bid, ask=p.ask) for p in prices}
    return valuation.value_portfolio(
        holdings=holdings,
        account_currency=currency,
        positions=valuation.positions_from_fills(fills),
        books=books,
        priced_at=max((p.synced_at for p in prices), default=None),
    )
