"""Back-office operations on clients: opening an account with its conditions, resetting a client's
password. Each takes the operator (`actor`), checks their permission and is audited."""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from kernel.errors import ServiceError
from users.models import User
from users.services import audit_record

from ..models import ClientGroup, TradingAccount
from .accounts import account_leverage_set, account_open


def _require(actor: User, permission: str) -> None:
    if not actor.has_perm(permission):
        raise ServiceError("permission_denied", "You do not have permission to do this.", status_code=403)


@transaction.atomic
def client_account_open(
    *, owner: User, group: ClientGroup, actor: User, currency: str | None = None, leverage: int | None = None
) -> TradingAccount:
    """Open an account for a client in `group` (its currency; `currency`, if given, must be it), with
    an optional leverage of its own."""
    _require(actor, "brokerage.open_account")
    if currency is not None and currency.upper() != group.currency:
        raise ServiceError(
            "currency_mismatch",
            f"Group {group} is in {group.currency}, not {currency}.",
            fields={"currency": [f"Must be {group.currency} for this group."]},
            status_code=409,
        )
    account = account_open(owner=owner, group=group)
    if leverage is not None:
        account_leverage_set(account=account, leverage=leverage, actor=actor)
    audit_record(
        actor=actor,
        action="account.open",
        target=account,
        details={"owner": owner.username, "group": group.name, "leverage": leverage, "via": "api"},
    )
    return account


@transaction.atomic
def client_password_reset(*, client: User, password: str, actor: User) -> None:
    """Set a client's new password (validated like any) and log out their API sessions (their refresh
    tokens are revoked). Only clients: an operator's password is not the back office's to reset."""
    _require(actor, "brokerage.reset_client_password")
    if client.is_staff or client.is_superuser:
        raise ServiceError(
            "permission_denied", "Only a client's password can be reset here.", status_code=403
        )
    try:
        validate_password(password, client)
    except ValidationError as exc:
        raise ServiceError(
            "invalid_password", "The password is not acceptable.", fields={"password": exc.messages}
        ) from None
    client.set_password(password)
    client.save(update_fields=["password"])
    for token in OutstandingToken.objects.filter(user=client):
        BlacklistedToken.objects.get_or_create(token=token)
    audit_record(actor=actor, action="client.password_reset", target=client, details={})
