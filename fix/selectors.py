import copy
import fnmatch
import json
import logging
from datetime import datetime
from decimal import Decimal
from typing import cast

from django.db.models import Q, QuerySet

from brokerage.models import Order, OrderStatus
from kernel import sql
from kernel.credentials import secret_from_env
from kernel.redis import sync_client
from kernel.versions import VersionedCache
from marketdata.models import Instrument, VenueSymbol

from .channels import state_key
from .config import SessionConfig
from .models import (
    OPEN_ORDER_STATES,
    FixCommand,
    FixOrder,
    FixOrderRequest,
    FixOrderState,
    FixSession,
    RequestState,
    RoutingRule,
)

log = logging.getLogger(__name__)


def _password(session: FixSession) -> str:
    """The stored password, or the named environment variable's: only a LIVERMORE_SECRET_ one (a
    name without the prefix is refused and logged, never read)."""
    if not session.password_env:
        return session.password
    try:
        return secret_from_env(session.password_env)
    except ValueError as exc:
        log.error("FIX session %s: password_env refused: %s", session.name, exc)
        return ""


def fix_session_configs() -> list[SessionConfig]:
    """Enabled sessions as runfix uses them; the password (from the named environment variable when
    one is set, else the stored one) stays in memory."""
    sessions = FixSession.objects.filter(enabled=True).select_related("venue")
    out = []
    for s in sessions:
        symbols: tuple[tuple[str, str], ...] = ()
        if s.does_market_data and s.venue is not None and s.venue.enabled:
            symbols = tuple(
                sorted(s.venue.symbols.filter(enabled=True).values_list("venue_symbol", "instrument__symbol"))
            )
        out.append(
            SessionConfig(
                id=s.pk,
                name=s.name,
                begin_string=s.begin_string,
                sender_comp_id=s.sender_comp_id,
                target_comp_id=s.target_comp_id,
                host=s.host,
                port=s.port,
                heartbeat_s=s.heartbeat_s,
                reconnect_s=s.reconnect_s,
                tls=s.tls,
                tls_ca_file=s.tls_ca_file,
                market_data=s.does_market_data,
                trading=s.does_trading,
                venue_code=s.venue.code if s.venue is not None else "",
                start_time=s.start_time,
                end_time=s.end_time,
                start_day=s.start_day,
                end_day=s.end_day,
                reset_on_logon=s.reset_on_logon,
                username=s.username,
                password=_password(s),
                account=s.account,
                log_market_data=s.log_market_data,
                relax_field_validation=s.relax_field_validation,
                symbols=symbols,
                next_sender_seq=s.next_sender_seq,
                next_target_seq=s.next_target_seq,
            )
        )
    return out


def fix_commands_pending() -> QuerySet[FixCommand]:
    return FixCommand.objects.filter(done_at__isnull=True).order_by("requested_at")


def fix_session_state(*, session: FixSession) -> dict[str, object] | None:
    """What runfix last exported for the session (None when runfix is not running it)."""
    raw = cast(bytes | None, sync_client().get(state_key(session.name)))
    return json.loads(raw) if raw else None


def fix_sessions_with_state() -> list[tuple[FixSession, dict[str, object] | None]]:
    """Every session with what runfix last exported for it (None when runfix is not running it)."""
    sessions = list(FixSession.objects.select_related("venue").order_by("name"))
    if not sessions:
        return []
    raws = cast(list[bytes | None], sync_client().mget([state_key(s.name) for s in sessions]))
    return [(s, json.loads(raw) if raw else None) for s, raw in zip(sessions, raws, strict=True)]


# The data version of the routing rules (kernel/versions.py): moved on by any save or delete of a rule
# (fix/receivers.py). A write that bypasses the model signals (a queryset .update()) must bump it.
ROUTING_VERSION = "routing"


def _enabled_rules(_: None) -> tuple[RoutingRule, ...]:
    return tuple(sql.select(RoutingRule, "t.enabled ORDER BY t.priority, t.id", []))


# Every order asks for its route, and the rules change only when an operator edits them: they are
# kept per process under their version instead of read with each order.
_rules: VersionedCache[None, tuple[RoutingRule, ...]] = VersionedCache(
    (ROUTING_VERSION,), _enabled_rules, seed=True
)


def routing_rule_match(*, account_id: int, group_id: int, symbol: str, volume: Decimal) -> RoutingRule | None:
    """The first enabled rule (by priority) whose group, account, instrument pattern and volume range
    all match; None when no rule does. The rules come from the process's cache (their data version);
    a matching rule's FIX session is read now (its state changes without the rules')."""
    symbol = symbol.upper()
    for cached in _rules.get(None):
        if (
            (cached.group_id is None or cached.group_id == group_id)
            and (cached.account_id is None or cached.account_id == account_id)
            and (cached.volume_min is None or cached.volume_min <= volume)
            and (cached.volume_max is None or cached.volume_max >= volume)
            and fnmatch.fnmatchcase(symbol, cached.instrument_pattern.upper())
        ):
            rule = copy.copy(cached)  # the cached one is shared by every thread of the process
            if rule.session_id is not None:
                rule.session = sql.select(FixSession, "t.id = %s", [rule.session_id])[0]
            return rule
    return None


def fix_orders_open(*, session_id: int | None = None) -> QuerySet[FixOrder]:
    orders = FixOrder.objects.filter(state__in=[FixOrderState.PENDING, *OPEN_ORDER_STATES])
    if session_id is not None:
        orders = orders.filter(session_id=session_id)
    return orders.select_related("session", "order__account", "order__instrument")


def fix_orders_unacknowledged(
    *, session_id: int, older_than: datetime, max_requests: int
) -> QuerySet[FixOrder]:
    """Sent orders with no acknowledgement, whose last status request (if any) is also old."""
    return FixOrder.objects.filter(
        Q(status_requested_at__isnull=True) | Q(status_requested_at__lt=older_than),
        session_id=session_id,
        state=FixOrderState.SENT,
        sent_at__lt=older_than,
        status_requests__lt=max_requests,
    )


def fix_requests_unanswered(*, session_id: int, older_than: datetime) -> QuerySet[FixOrderRequest]:
    """Sent cancels and cancel/replaces with no answer since `older_than`: never asked about (the
    desk asks for their order's status), or asked about with no answer either."""
    return FixOrderRequest.objects.filter(
        Q(queried_at__isnull=True) | Q(queried_at__lt=older_than),
        fix_order__session_id=session_id,
        state=RequestState.SENT,
        sent_at__lt=older_than,
    ).select_related("fix_order")


def orders_awaiting_route(*, since: datetime) -> QuerySet[Order]:
    """A-Book orders the dealing engine stored as routed that have no FIX order yet (order_routed_idx)."""
    return Order.objects.filter(
        status=OrderStatus.ROUTED, created_at__gte=since, fix_order__isnull=True
    ).select_related("instrument")


def lp_symbol(*, session: FixSession, instrument: Instrument) -> str:
    """The LP's name for an instrument: the session venue's symbol mapping, else our symbol."""
    if session.venue_id is not None:
        mapped = (
            VenueSymbol.objects.filter(venue_id=session.venue_id, instrument=instrument)
            .values_list("venue_symbol", flat=True)
            .first()
        )
        if mapped:
            return mapped
    return instrument.symbol
