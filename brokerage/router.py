"""Which book an order goes to. settings.ORDER_ROUTER names a callable `(RouteRequest) -> RouteDecision`
that order_submit calls under the account lock before anything is filled or stored; a router may
refuse an order by raising livermore.errors.ServiceError. brokerage knows only its B-Book default:
the fix app's router (fix.routing.order_route) applies the operator's routing rules.

settings.ROUTED_ORDER_CANCEL names a callable `(*, order_id, reason) -> None` that order_cancel calls
for a routed (A-Book) order, taking the locks itself in the LP gateway's order: it ends the order at
once when the LP never got it, or asks the LP to cancel it (the order then stays routed until the
LP's answer ends it)."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from django.conf import settings
from django.utils.module_loading import import_string

from livermore.errors import ServiceError


@dataclass(frozen=True, slots=True)
class RouteRequest:
    account_id: int
    group_id: int
    symbol: str
    volume: Decimal
    side: str
    type: str


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """B: internalised (filled by the dealing engine). A: sent to the LP session named `session`."""

    book: Literal["A", "B"]
    session: str = ""

    def __post_init__(self) -> None:
        if self.book not in ("A", "B") or (self.book == "A") != bool(self.session):
            raise ValueError(f"an A-Book decision names a session, a B-Book one none: {self!r}")


Router = Callable[[RouteRequest], RouteDecision]
B_BOOK = RouteDecision(book="B")


def b_book(request: RouteRequest) -> RouteDecision:
    """The default without a FIX app: every order is internalised."""
    return B_BOOK


def no_lp(*, order_id: int, reason: str) -> None:
    """The default without a FIX app, which never routes an order."""
    raise ServiceError(
        "order_not_cancellable", f"Order {order_id} has no LP to cancel it at.", status_code=409
    )


@functools.cache
def _hook(path: str) -> Callable[..., Any]:
    hook: Callable[..., Any] = import_string(path)
    return hook


def order_route(request: RouteRequest) -> RouteDecision:
    router: Router = _hook(settings.ORDER_ROUTER)
    return router(request)


def routed_order_cancel(order_id: int, reason: str) -> None:
    _hook(settings.ROUTED_ORDER_CANCEL)(order_id=order_id, reason=reason)
