"""Mirror a user's Coinbase portfolio: accounts -> Holding rows, open and filled orders -> CoinbaseOrder."""

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from livermore.errors import ServiceError
from livermore.users.models import User
from marketdata.adapters.base import MalformedMessage
from marketdata.adapters.coinbase import CoinbaseRest, CoinbaseSigner
from marketdata.adapters.rest import VenueHttpError
from marketdata.adapters.streaming import rfc3339_ns

from .models import CoinbaseLink, CoinbaseOrder, Holding, SyncStatus

log = logging.getLogger(__name__)

ORDER_IDS_PER_REQUEST = 100


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
    """Fetch accounts and orders, then replace the user's mirror in one transaction.

    Everything is fetched before anything is written, so a failure (401, timeout, bad data) leaves the
    stored holdings and orders as they were and marks the link failed with the reason."""
    started = timezone.now()
    stored_open = set(
        CoinbaseOrder.objects.filter(user_id=link.user_id, status="OPEN").values_list("order_id", flat=True)
    )
    try:
        signer = CoinbaseSigner(link.api_key_name, link.private_key_pem)
        with CoinbaseRest(signer=signer, base_url=settings.COINBASE_REST_URL) as client:
            accounts = client.accounts()
            open_orders = client.orders(order_status=["OPEN"])
            since = link.orders_synced_until
            filled = client.orders(
                order_status=["FILLED"], start_date=since.strftime("%Y-%m-%dT%H:%M:%SZ") if since else None
            )
            # Orders we hold as open that are no longer open: fetch their final state by id.
            left_open = sorted(stored_open - {o["order_id"] for o in open_orders})
            closed = [
                order
                for i in range(0, len(left_open), ORDER_IDS_PER_REQUEST)
                for order in client.orders(order_ids=left_open[i : i + ORDER_IDS_PER_REQUEST])
            ]
        holdings = [_holding(link, account, started) for account in accounts]
        orders = [_order(link, order, started) for order in [*open_orders, *filled, *closed]]
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
        CoinbaseLink.objects.filter(pk=link.pk).update(
            status=SyncStatus.OK, last_error="", last_synced_at=timezone.now(), orders_synced_until=started
        )
    log.info(
        "user=%s venue=coinbase portfolio synced: %d holdings, %d orders",
        link.user_id,
        len(holdings),
        len(orders),
    )
    link.refresh_from_db()
    return link


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


def _upsert(model: type[Holding] | type[CoinbaseOrder], rows: Iterable[Any], keys: tuple[str, str]) -> None:
    """Insert or update by the natural key (the same order can come in two listings: keep one)."""
    fields = [f.name for f in model._meta.concrete_fields if not f.primary_key and f.name not in keys]
    by_key = {getattr(row, keys[1]): row for row in rows}
    model.objects.bulk_create(
        list(by_key.values()), update_conflicts=True, unique_fields=list(keys), update_fields=fields
    )
