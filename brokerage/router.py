"""The LP gateway: where an order goes, and how a routed order is cancelled. settings.ORDER_GATEWAY
names one object implementing `LpGateway`, which the dealing engine calls under the account lock:

- `route(request)` decides the book before anything is filled or stored; it may refuse an order by
  raising kernel.errors.ServiceError.
- `cancel(order_id=..., reason=...)` cancels a routed (A-Book) order, taking the locks itself in the
  gateway's order: it ends the order at once when the LP never got it, or asks the LP to cancel it
  (the order then stays routed until the LP's answer ends it).

brokerage knows only its B-Book default, `INTERNAL`; the fix app's gateway (fix.routing.GATEWAY)
applies the operator's routing rules and cancels over FIX."""

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from kernel.errors import ServiceError


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
    """B: internalised (filled by the dealing engine). A: sent to the LP session named `session`, of
    the venue `venue` (its code, when the session names one: the kill switch's venue scope)."""

    book: Literal["A", "B"]
    session: str = ""
    venue: str = ""

    def __post_init__(self) -> None:
        if self.book not in ("A", "B") or (self.book == "A") != bool(self.session):
            raise ValueError(f"an A-Book decision names a session, a B-Book one none: {self!r}")


class LpGateway(Protocol):
    def route(self, request: RouteRequest) -> RouteDecision: ...

    def cancel(self, *, order_id: int, reason: str) -> None: ...


B_BOOK = RouteDecision(book="B")


class Internal:
    """The gateway without a FIX app: every order is internalised, none is ever routed."""

    def route(self, request: RouteRequest) -> RouteDecision:
        return B_BOOK

    def cancel(self, *, order_id: int, reason: str) -> None:
        raise ServiceError(
            "order_not_cancellable", f"Order {order_id} has no LP to cancel it at.", status_code=409
        )


INTERNAL = Internal()


@functools.cache
def _gateway(path: str) -> LpGateway:
    gateway: LpGateway = import_string(path)
    return gateway


def order_route(request: RouteRequest) -> RouteDecision:
    return _gateway(settings.ORDER_GATEWAY).route(request)


def routed_order_cancel(order_id: int, reason: str) -> None:
    _gateway(settings.ORDER_GATEWAY).cancel(order_id=order_id, reason=reason)
