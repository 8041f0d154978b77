"""A-Book routing obeys the kill switch: an order the state forbids is never routed to the LP, whether
the state was set before the order (refused at submit, the LP's venue counting as a scope) or between
the order and its routing by runfix (rejected in the outbox, its margin released)."""

from decimal import Decimal as D

import pytest

from brokerage.models import OrderStatus, TradingScope
from brokerage.services import order_submit, trading_state_set
from fix.models import FixOrder
from fix.services import fix_order_route
from kernel.errors import ServiceError
from tests.support.stack import free_port
from tests.support.users import make_operator

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_order_to_a_halted_lp_is_refused_and_nothing_is_stored(make_session, a_book):
    session = make_session(free_port(), role="trading")
    account = a_book(session)
    trading_state_set(
        scope=TradingScope.VENUE,
        venue=session.venue,
        state="halted",
        reason="LP incident",
        actor=make_operator(),
    )
    with pytest.raises(ServiceError) as refused:
        order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    assert refused.value.code == "trading_halted"
    assert "venue lpx" in refused.value.message
    assert not account.orders.exists()


def test_an_order_the_state_forbids_since_it_was_taken_is_rejected_in_the_outbox_not_sent(
    make_session, a_book
):
    session = make_session(free_port(), role="trading", venue=None)
    account = a_book(session)
    opening = order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    assert opening.status == OrderStatus.ROUTED
    trading_state_set(
        scope=TradingScope.GLOBAL, state="reduce_only", reason="daily loss", actor=make_operator()
    )

    assert fix_order_route(order=opening) is None
    opening.refresh_from_db()
    assert (opening.status, opening.margin) == (OrderStatus.REJECTED, 0)
    assert "reduce-only" in opening.close_text
    assert not FixOrder.objects.exists()
    account.refresh_from_db()
    assert account.margin_reserved == 0
