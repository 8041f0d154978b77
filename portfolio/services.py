"""Mirror a user's Coinbase portfolio: accounts -> Holding, orders -> CoinbaseOrder, fills ->
CoinbaseFill, and the best bid/ask of the products that value the holdings -> PortfolioPrice.
The valuation itself (cost basis, PnL) is computed on read from these rows: portfolio/valuation.py."""

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from kernel.errors import ServiceError
from marketdata.adapters.base import MalformedMessage
from marketdata.adapters.coinbase import CoinbaseRest, CoinbaseSigner
from marketdata.adapters.rest import VenueHttpError
from marketdata.adapters.streaming import rfc3339_ns
from users.models import User

from . import valuation
from .models import CoinbaseFill, CoinbaseLink, CoinbaseOrder, Holding, PortfolioPrice, SyncStatus

log = logging.getLogger(__name__)

ORDER_IDS_PER_REQUEST = 100
# Orders that ended: FILLED, and CANCELLED/EXPIRED ones (kept when something was filled first).
FINAL_STATUSES = ["FILLED", "CANCELLED", "EXPIRED"]
# A fill can be posted a little after the moment a sync started; fetching this much earlier again
# costs a few duplicate rows (upserted by entry_id) and never loses one.
FILLS_OVERLAP = timedelta(minutes=5)
PRODUCTS_PER_PRICE_REQUEST = 100
SIZE_QUANTUM = Decimal("1e-18")  # the stored precision of quantities


def coinbase_link_set(
    *, user: User, api_key_name: str, private_key_pem: str, enabled: bool = True
) -> CoinbaseLink:
    """Store (or replace) the user's Coinbase key; the sync state starts afresh (a new key may be
    another portfolio). Holdings stay until the next sync replaces them."""
    api_key_name, private_key_pem = api_key_name.strip(), private_key_pem.strip()
    fields: dict[str, list[str]] = {}
    if not api_key_name:
        fields["api_key_name"] = ["The API key name is required (organizations/{org}/apiKeys/{key})."]
    try:
        CoinbaseSigner(api_key_name or "-", private_key_pem)
    except ValueError:
        fields["private_key_pem"] = ["Not an EC P-256 or Ed25519 private key."]
    if fields:
        raise ServiceError(
            "invalid_credentials",
            "The Coinbase key is not valid.",
            fields=fields,
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    link, _ = CoinbaseLink.objects.update_or_create(
        user=user,
        defaults={
            "api_key_name": api_key_name,
            "private_key_pem": private_key_pem,
            "enabled": enabled,
            "status": SyncStatus.NEVER,
            "last_error": "",
            "orders_synced_until": None,
        },
    )
    return link


def coinbase_link_enable(*, link: CoinbaseLink, enabled: bool) -> CoinbaseLink:
    CoinbaseLink.objects.filter(pk=link.pk).update(enabled=enabled)
    link.enabled = enabled
    return link


def coinbase_link_delete(*, user: User) -> None:
    CoinbaseLink.objects.filter(user=user).delete()


def _decimal(value: object) -> Decimal:
    try:
        number = Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation as exc:
        raise MalformedMessage(f"not a decimal: {value!r}") from exc
    if not number.is_finite():
        raise MalformedMessage(f"not a finite decimal: {value!r}")
    return number


def _time(value: object) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(rfc3339_ns(str(value)) / 1e9, UTC)


def _failure(exc: Exception) -> str:
    if isinstance(exc, VenueHttpError) and exc.status in (401, 403):
        return (
            f"Coinbase rejected the API key (HTTP {exc.status}: {exc.message}). Check the key name and "
            "private key, and that the key is active with view permission."
        )
    return f"Coinbase sync failed: {exc}"[:500]


def portfolio_sync(*, link: CoinbaseLink) -> CoinbaseLink:
    """Fetch accounts, orders, fills and prices, then replace the user's mirror in one transaction.

    Everything is fetched before anything is written, so a failure (401, timeout, bad data) leaves the
    stored holdings, orders, fills and prices as they were and marks the link failed with the reason.
    Re-running a sync is harmless: every row is upserted by its natural key."""
    started = timezone.now()
    stored_open = set(
        CoinbaseOrder.objects.filter(user_id=link.user_id, status="OPEN").values_list("order_id", flat=True)
    )
    try:
        signer = CoinbaseSigner(link.api_key_name, link.private_key_pem)
        with CoinbaseRest(signer=signer, base_url=settings.COINBASE_REST_URL) as client:
            accounts = client.accounts()
            open_orders = client.orders(order_status=["OPEN"])
            ended = client.orders(order_status=FINAL_STATUSES, start_date=_rfc3339(link.orders_synced_until))
            # Orders we hold as open that are no longer open: fetch their final state by id.
            left_open = sorted(stored_open - {o["order_id"] for o in open_orders})
            closed = [
                order
                for i in range(0, len(left_open), ORDER_IDS_PER_REQUEST)
                for order in client.orders(order_ids=left_open[i : i + ORDER_IDS_PER_REQUEST])
            ]
            since = link.fills_synced_until - FILLS_OVERLAP if link.fills_synced_until else None
            fills = [
                _fill(link, fill, started) for fill in client.fills(start_sequence_timestamp=_rfc3339(since))
            ]
            holdings = [_holding(link, account, started) for account in accounts]
            products = _products_to_price(link, holdings, fills)
            books = [
                book
                for i in range(0, len(products), PRODUCTS_PER_PRICE_REQUEST)
                for book in client.best_bid_ask(products[i : i + PRODUCTS_PER_PRICE_REQUEST])
            ]
        orders = [
            _order(link, order, started) for order in [*open_orders, *[o for o in ended if _keep(o)], *closed]
        ]
        prices = [_price(link, book, started) for book in books if book.get("product_id") in products]
    except (VenueHttpError, MalformedMessage, ValueError, KeyError, TypeError) as exc:
        message = _failure(exc)
        CoinbaseLink.objects.filter(pk=link.pk).update(status=SyncStatus.FAILED, last_error=message)
        log.warning("user=%s venue=coinbase portfolio sync failed: %s", link.user_id, message)
        link.refresh_from_db()
        return link
    with transaction.atomic():
        _upsert(Holding, holdings, ("user", "account_uuid"))
        Holding.objects.filter(user_id=link.user_id).exclude(
            account_uuid__in=[h.account_uuid for h in holdings]
        ).delete()
        _upsert(CoinbaseOrder, orders, ("user", "order_id"))
        _upsert(CoinbaseFill, fills, ("user", "entry_id"))
        _upsert(PortfolioPrice, prices, ("user", "product_id"))
        # A price not fetched this time (the product left the portfolio, or Coinbase no longer
        # answers for it) must not value anything with a stale number.
        PortfolioPrice.objects.filter(user_id=link.user_id).exclude(
            product_id__in=[p.product_id for p in prices]
        ).delete()
        CoinbaseLink.objects.filter(pk=link.pk).update(
            status=SyncStatus.OK,
            last_error="",
            last_synced_at=timezone.now(),
            orders_synced_until=started,
            fills_synced_until=started,
        )
    log.info(
        "user=%s venue=coinbase portfolio synced: %d holdings, %d orders, %d fills, %d prices",
        link.user_id,
        len(holdings),
        len(orders),
        len(fills),
        len(prices),
    )
    link.refresh_from_db()
    return link


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _keep(order: Mapping[str, Any]) -> bool:
    """A cancelled or expired order is part of the trader's history only if something filled."""
    return bool(order["status"] == "FILLED" or _decimal(order.get("filled_size")) > 0)


def _products_to_price(link: CoinbaseLink, holdings: list[Holding], fills: list[CoinbaseFill]) -> list[str]:
    """The products that value these holdings, chosen from all the user's fills (stored and new)."""
    new = {f.entry_id for f in fills}
    stored = CoinbaseFill.objects.filter(user_id=link.user_id).exclude(entry_id__in=new)
    positions = valuation.positions_from_fills(
        [f.as_fill() for f in [*stored, *fills] if valuation.is_spot(f.product_id)]
    )
    currencies = {h.currency for h in holdings if h.total}
    return valuation.products_to_price(currencies, link.currency, positions)


def _holding(link: CoinbaseLink, account: Mapping[str, Any], now: datetime) -> Holding:
    return Holding(
        user_id=link.user_id,
        account_uuid=account["uuid"],
        currency=account["currency"],
        name=account.get("name") or "",
        available=_decimal(account["available_balance"]["value"]),
        hold=_decimal((account.get("hold") or {}).get("value")),
        synced_at=now,
    )


def _order(link: CoinbaseLink, order: Mapping[str, Any], now: datetime) -> CoinbaseOrder:
    created = _time(order["created_time"])
    if created is None:
        raise MalformedMessage(f"order {order.get('order_id')} has no created_time")
    return CoinbaseOrder(
        user_id=link.user_id,
        order_id=order["order_id"],
        product_id=order["product_id"],
        side=order["side"],
        status=order["status"],
        order_type=order.get("order_type") or "",
        created_time=created,
        last_fill_time=_time(order.get("last_fill_time")),
        filled_size=_decimal(order.get("filled_size")),
        average_filled_price=_decimal(order.get("average_filled_price")),
        filled_value=_decimal(order.get("filled_value")),
        total_fees=_decimal(order.get("total_fees")),
        order_configuration=order.get("order_configuration") or {},
        synced_at=now,
    )


def _fill(link: CoinbaseLink, fill: Mapping[str, Any], now: datetime) -> CoinbaseFill:
    price, raw_size, commission = (
        _decimal(fill["price"]),
        _decimal(fill["size"]),
        _decimal(fill.get("commission")),
    )
    in_quote = bool(fill.get("size_in_quote"))
    if in_quote and not price:
        raise MalformedMessage(f"fill {fill.get('entry_id')}: a quote-sized fill needs a price")
    traded, posted = _time(fill["trade_time"]), _time(fill.get("sequence_timestamp") or fill["trade_time"])
    if traded is None or posted is None:
        raise MalformedMessage(f"fill {fill.get('entry_id')} has no trade_time")
    trade_type = fill.get("trade_type") or valuation.REGULAR_FILL
    if trade_type == valuation.REGULAR_FILL and (
        fill["side"] not in (valuation.BUY, valuation.SELL) or raw_size <= 0 or price < 0 or commission < 0
    ):
        raise MalformedMessage(f"fill {fill.get('entry_id')}: not a BUY or SELL of a positive size")
    return CoinbaseFill(
        user_id=link.user_id,
        entry_id=fill["entry_id"],
        trade_id=fill.get("trade_id") or "",
        order_id=fill["order_id"],
        product_id=fill["product_id"],
        side=fill["side"],
        trade_type=trade_type,
        price=price,
        # Quote-sized orders report the fill size in quote currency (as ccxt reads it).
        size=(raw_size / price).quantize(SIZE_QUANTUM) if in_quote else raw_size,
        raw_size=raw_size,
        size_in_quote=in_quote,
        commission=commission,
        liquidity_indicator=fill.get("liquidity_indicator") or "",
        trade_time=traded,
        sequence_timestamp=posted,
        synced_at=now,
    )


def _price(link: CoinbaseLink, book: Mapping[str, Any], now: datetime) -> PortfolioPrice:
    """One pricebook: the first level of each side is the best; an empty side has no price."""
    bids, asks = book.get("bids") or [], book.get("asks") or []
    return PortfolioPrice(
        user_id=link.user_id,
        product_id=book["product_id"],
        bid=_decimal(bids[0]["price"]) if bids else None,
        ask=_decimal(asks[0]["price"]) if asks else None,
        venue_time=_time(book.get("time")),
        synced_at=now,
    )


def portfolio_currency_set(*, link: CoinbaseLink, currency: str) -> CoinbaseLink:
    """Change the account currency the portfolio is valued in; the next sync fetches its prices."""
    try:
        code = valuation.currency_code(currency)
    except ValueError as exc:
        raise ServiceError(
            "invalid_currency",
            "The currency must be a code such as USD or EUR.",
            fields={"currency": [str(exc)]},
            status_code=status.HTTP_400_BAD_REQUEST,
        ) from exc
    CoinbaseLink.objects.filter(pk=link.pk).update(currency=code)
    link.currency = code
    return link


def _upsert(
    model: type[Holding] | type[CoinbaseOrder] | type[CoinbaseFill] | type[PortfolioPrice],
    rows: Iterable[Any],
    keys: tuple[str, str],
) -> None:
    """Insert or update by the natural key (the same order can come in two listings: keep one)."""
    fields = [f.name for f in model._meta.concrete_fields if not f.primary_key and f.name not in keys]
    by_key = {getattr(row, keys[1]): row for row in rows}
    model.objects.bulk_create(
        list(by_key.values()), update_conflicts=True, unique_fields=list(keys), update_fields=fields
    )
