"""The LP gateway (settings.ORDER_GATEWAY) when the fix app is installed: the first matching routing
rule decides the book, an order no rule matches is internalised (B-Book), and routed orders are
cancelled over FIX."""

from django.conf import settings

from brokerage.router import B_BOOK, RouteDecision, RouteRequest
from kernel.errors import ServiceError

from .models import RoutingAction
from .selectors import routing_rule_match
from .services import fix_order_client_cancel


class FixGateway:
    def route(self, request: RouteRequest) -> RouteDecision:
        """B-Book unless a rule says A-Book; an A-Book rule whose session cannot trade refuses the order
        (nothing is stored), rather than leaving it waiting for a session that will not send it."""
        rule = routing_rule_match(
            account_id=request.account_id,
            group_id=request.group_id,
            symbol=request.symbol,
            volume=request.volume,
        )
        if rule is None or rule.action == RoutingAction.B_BOOK:
            return B_BOOK
        session = rule.session
        assert session is not None  # routingrule_a_book_needs_session
        if not session.enabled or not session.does_trading:
            raise ServiceError(
                "no_route",
                f"Rule {rule.name!r} routes this order to FIX session {session.name}, "
                "which cannot trade now.",
                status_code=503,
            )
        if not settings.LIVERMORE_DEMO and session.venue is not None and session.venue.simulated:
            # A demo LP's fills are simulated prices: a live deployment never books one.
            raise ServiceError(
                "no_route",
                f"Rule {rule.name!r} routes this order to FIX session {session.name}, whose LP is "
                "simulated (a demo venue), and this deployment is live.",
                status_code=503,
            )
        return RouteDecision(
            book="A", session=session.name, venue=session.venue.code if session.venue is not None else ""
        )

    def cancel(self, *, order_id: int, reason: str) -> None:
        fix_order_client_cancel(order_id=order_id, reason=reason)


GATEWAY = FixGateway()
