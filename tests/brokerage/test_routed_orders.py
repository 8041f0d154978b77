"""The LP gateway (settings.ORDER_GATEWAY) and the A-Book order lifecycle in the dealing engine:
routed orders hold margin, the LP's partial fills are booked as they come, and an LP reject or cancel
ends what is left exactly once."""

from decimal import Decimal as D

import pytest

from brokerage import services
from brokerage.models import Deal, Order, OrderStatus, Position, Posting, TradingAccount
from brokerage.router import Internal, RouteDecision, RouteRequest
from brokerage.selectors import account_summary
from brokerage.watcher import triggers_load
from kernel.errors import ServiceError

from .conftest import set_commission

pytestmark = pytest.mark.django_db
requests: list[RouteRequest] = []


class ToTheLp(Internal):
    def route(self, request: RouteRequest) -> RouteDecision:
        requests.append(request)
        return RouteDecision(book="A", session="lp-test")


class NoRoute(Internal):
    def route(self, request: RouteRequest) -> RouteDecision:
        raise ServiceError("no_route", "No LP takes this order now.", status_code=503)


to_the_lp, no_route = ToTheLp(), NoRoute()


@pytest.fixture
def a_book(settings, market):
    requests.clear()
    settings.ORDER_GATEWAY = f"{__name__}.to_the_lp"
    market.set("EURUSD", "1.1000", "1.1002")


def routed(account: TradingAccount, volume: str = "1", **kwargs) -> Order:
    return services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(volume), **kwargs)


def test_the_router_decides_before_the_fill_and_an_a_book_order_waits_routed_holding_margin(account, a_book):
    order = routed(account)

    assert requests == [
        RouteRequest(
            account_id=account.pk,
            group_id=account.group_id,
            symbol="EURUSD",
            volume=D(1),
            side="buy",
            type="market",
        )
    ]
    assert (order.status, order.book, order.route) == (OrderStatus.ROUTED, "A", "lp-test")
    assert not Deal.objects.exists() and not Position.objects.exists()
    assert order.margin == D("1100.20")  # 1 lot x 100000 x 1.1002 / 100
    account.refresh_from_db()
    assert account.margin_reserved == D("1100.20")
    assert account_summary(account=account).margin == D("1100.20")


def test_margin_held_by_routed_orders_refuses_an_order_it_leaves_no_room_for(account, a_book):
    routed(account, "4")  # holds 4400.80 of the 5000 balance
    with pytest.raises(ServiceError) as refused:
        routed(account, "1")
    assert refused.value.code == "insufficient_margin"
    assert Order.objects.count() == 1


def test_a_router_refusing_an_order_writes_nothing(account, settings, market):
    settings.ORDER_GATEWAY = f"{__name__}.no_route"
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as refused:
        routed(account)
    assert refused.value.code == "no_route"
    assert not Order.objects.exists()


def test_the_b_book_default_router_fills_at_submit(account, settings, market):
    settings.ORDER_GATEWAY = "brokerage.router.INTERNAL"
    market.set("EURUSD", "1.1000", "1.1002")
    order = routed(account)
    assert (order.status, order.book, order.route, order.fill_price) == (
        OrderStatus.FILLED,
        "B",
        "",
        D("1.1002"),
    )
    assert order.filled_volume == D(1)


def test_an_a_book_decision_names_its_session():
    with pytest.raises(ValueError):
        RouteDecision(book="A")
    with pytest.raises(ValueError):
        RouteDecision(book="B", session="lp")


def test_a_book_limit_and_stop_orders_go_to_the_lp_not_to_the_trigger_watcher(account, a_book, settings):
    limit = routed(account, type="limit", price=D("1.0900"))
    stop = routed(account, type="stop", stop_price=D("1.1100"))
    assert [limit.status, stop.status] == [OrderStatus.ROUTED, OrderStatus.ROUTED]
    assert [r.type for r in requests] == ["limit", "stop"]
    assert limit.margin == D("1090.00") and stop.margin == D("1110.00")  # at their entry prices
    assert triggers_load(account_id=account.pk) == []

    settings.ORDER_GATEWAY = "brokerage.router.INTERNAL"
    pending = routed(account, type="limit", price=D("1.0900"))
    assert [t.object_id for t in triggers_load(account_id=account.pk)] == [pending.pk]


def test_partial_fills_book_a_deal_each_with_exact_postings_and_release_margin_pro_rata(
    account, group, instruments, a_book
):
    set_commission(group, instruments["EURUSD"], "7")
    order = routed(account)

    first = services.order_fill(order_id=order.pk, price=D("1.1001"), external_id="X-1", volume=D("0.4"))
    order.refresh_from_db()
    account.refresh_from_db()
    assert [(d.volume, d.price, d.commission, d.reason) for d in first] == [
        (D("0.4"), D("1.1001"), D("-2.80"), "lp")
    ]
    assert (order.status, order.filled_volume, order.fill_price) == (
        OrderStatus.ROUTED,
        D("0.4"),
        D("1.1001"),
    )
    assert (order.margin, account.margin_reserved) == (D("660.12"), D("660.12"))
    assert (
        services.order_fill(order_id=order.pk, price=D("1.1001"), external_id="X-1", volume=D("0.4")) == first
    )
    with pytest.raises(ServiceError) as too_much:
        services.order_fill(order_id=order.pk, price=D("1.1003"), external_id="X-2", volume=D("0.7"))
    assert too_much.value.code == "invalid_volume"

    second = services.order_fill(order_id=order.pk, price=D("1.1003"), external_id="X-2")
    order.refresh_from_db()
    account.refresh_from_db()
    assert [(d.volume, d.price, d.commission) for d in second] == [(D("0.6"), D("1.1003"), D("-4.20"))]
    assert (order.status, order.filled_volume, order.fill_price) == (OrderStatus.FILLED, D(1), D("1.10022"))
    assert (order.margin, account.margin_reserved) == (0, 0)
    position = Position.objects.get()
    assert (position.volume, position.open_price, position.margin, position.commission) == (
        D(1),
        D("1.10022"),
        D("1100.22"),
        D("-7.00"),
    )
    postings = (
        Posting.objects.filter(transaction__order=order).order_by("id").values_list("amount", flat=True)
    )
    assert list(postings) == [D("-2.80"), D("2.80"), D("-4.20"), D("4.20")]
    assert account.balance == D("4993.00")


def test_an_lp_reject_ends_the_order_once_and_releases_its_margin(account, a_book):
    order = routed(account)

    ended = services.order_routed_end(
        order_id=order.pk, status="rejected", reason="no liquidity", external_id="L1"
    )
    assert ended is not None
    assert (ended.status, ended.close_reason, ended.close_text, ended.external_id) == (
        OrderStatus.REJECTED,
        "lp",
        "no liquidity",
        "L1",
    )
    assert services.order_routed_end(order_id=order.pk, status="rejected", reason="again") is None
    account.refresh_from_db()
    assert account.margin_reserved == 0
    order.refresh_from_db()
    assert (order.status, order.close_text, order.margin) == (OrderStatus.REJECTED, "no liquidity", 0)
    with pytest.raises(ServiceError) as late:
        services.order_fill(order_id=order.pk, price=D("1.1001"), external_id="X-9")
    assert late.value.code == "order_not_routed"


def test_a_cancel_after_a_partial_fill_keeps_the_fill_and_releases_the_rest(account, a_book):
    order = routed(account)
    services.order_fill(order_id=order.pk, price=D("1.1001"), external_id="X-1", volume=D("0.25"))

    ended = services.order_routed_end(order_id=order.pk, status="cancelled", reason="rest cancelled")
    assert ended is not None and (ended.status, ended.filled_volume) == (OrderStatus.CANCELLED, D("0.25"))
    account.refresh_from_db()
    assert account.margin_reserved == 0
    assert Position.objects.get().volume == D("0.25")


def test_ending_a_routed_order_takes_only_rejected_cancelled_or_expired(account, a_book):
    order = routed(account)
    with pytest.raises(ServiceError) as bad:
        services.order_routed_end(order_id=order.pk, status="filled", reason="")  # type: ignore[arg-type]
    assert bad.value.code == "invalid_status"
    assert Order.objects.get().status == OrderStatus.ROUTED


def test_a_routed_order_is_not_modified_here(account, a_book):
    order = routed(account, type="limit", price=D("1.0900"))
    with pytest.raises(ServiceError) as refused:
        services.order_modify(order=order, price=D("1.0950"))
    assert (refused.value.code, refused.value.status_code) == ("order_routed", 409)
    assert Order.objects.get(pk=order.pk).price == D("1.0900")
