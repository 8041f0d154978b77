"""Which book an order goes to. settings.ORDER_ROUTER names a callable `(RouteRequest) -> RouteDecision`
that order_submit calls under the account lock before anything is filled or stored; a router may
refuse an order by raising livermore.errors.ServiceError. brokerage knows only its B-Book default:
the fix app's router (fix.routing.order_route) applies the operator's routing rules."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.utils.module_loading import import_string


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


@functools.lru_cache(maxsize=4)
def _router(path: str) -> Router:
    router: Router = import_string(path)
    return router


def order_route(request: RouteRequest) -> RouteDecision:
    return _router(settings.ORDER_ROUTER)(request)
