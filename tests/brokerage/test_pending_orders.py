from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from brokerage import services
from brokerage.models import Deal, Order, OrderStatus, Position
from brokerage.pricing import Tick
from brokerage.watcher import triggers_load

pytestmark = pytest.mark.django_db


def place(account, market, side="buy", volume="1", **kwargs):
    market.set("EURUSD", "1.1000", "1.1002")
    return services.order_submit(account=account, symbol="EURUSD", side=side, volume=D(volume), **kwargs)


def tick(bid, ask):
    return Tick(D(bid), D(ask))


def test_a_buy_limit_fills_at_its_price_when_touched(account, market):
    order = place(account, market, type="limit", price=D("1.0950"), sl=D("1.0900"))
    assert services.order_trigger(order_id=order.pk, tick=tick("1.0949", "1.0951")) is None
    filled = services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950"))
    assert filled is not None and filled.status == OrderStatus.FILLED
    deal = Deal.objects.get(order=order)
    assert (deal.price, deal.reason) == (D("1.0950"), "pending")
    assert Position.objects.get().sl == D("1.0900")
    assert services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950")) is None
    assert Deal.objects.count() == 1


def test_a_buy_limit_gapped_through_fills_at_the_first_price_beyond(account, market):
    order = place(account, market, type="limit", price=D("1.0950"))
    services.order_trigger(order_id=order.pk, tick=tick("1.0938", "1.0940"))
    assert Deal.objects.get(order=order).price == D("1.0940")


def test_a_sell_stop_fills_on_the_bid(account, market):
    order = place(account, market, side="sell", type="stop", stop_price=D("1.0950"))
    assert services.order_trigger(order_id=order.pk, tick=tick("1.0951", "1.0953")) is None
    services.order_trigger(order_id=order.pk, tick=tick("1.0945", "1.0947"))
    assert Deal.objects.get(order=order).price == D("1.0945")


def test_a_stop_limit_becomes_a_limit_then_fills_within_it(account, market):
    order = place(account, market, type="stop_limit", stop_price=D("1.1050"), price=D("1.1060"))
    result = services.order_trigger(order_id=order.pk, tick=tick("1.1068", "1.1070"))
    assert result is not None and result.status == OrderStatus.PENDING
    assert result.stop_triggered_at is not None
    assert not Deal.objects.exists()
    services.order_trigger(order_id=order.pk, tick=tick("1.1053", "1.1055"))
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED
    assert Deal.objects.get(order=order).price == D("1.1055")


def test_a_pending_order_without_margin_at_its_trigger_is_rejected(account, market):
    order = place(account, market, volume="4", type="limit", price=D("1.0950"))
    services.account_withdraw(account=account, amount=D("4000"))
    result = services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950"))
    assert result is not None
    order.refresh_from_db()
    assert (order.status, order.close_reason) == (OrderStatus.REJECTED, "insufficient_margin")
    assert not Position.objects.exists()


def test_good_till_date_orders_expire(account, market):
    soon = timezone.now() + timedelta(minutes=5)
    order = place(account, market, type="limit", price=D("1.0950"), time_in_force="gtd", expires_at=soon)
    gtc = place(account, market, type="limit", price=D("1.0940"))
    assert services.orders_expire(now=timezone.now()) == 0
    assert services.orders_expire(now=soon + timedelta(seconds=1)) == 1
    order.refresh_from_db()
    gtc.refresh_from_db()
    assert (order.status, order.close_reason, gtc.status) == ("expired", "expiry", "pending")
    assert services.order_trigger(order_id=order.pk, tick=tick("1.0900", "1.0902")) is None


def test_an_expired_good_till_date_order_never_fills_on_a_triggering_quote(account, market):
    soon = timezone.now() + timedelta(minutes=5)
    order = place(account, market, type="limit", price=D("1.0950"), time_in_force="gtd", expires_at=soon)
    assert [t.object_id for t in triggers_load(account_id=account.pk)] == [order.pk]
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert triggers_load(account_id=account.pk) == []  # the watcher does not arm it again

    result = services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950"))  # armed before
    assert result is not None
    assert (result.status, result.close_reason) == (OrderStatus.EXPIRED, "expiry")
    assert not Deal.objects.exists()
    assert not Position.objects.exists()


def test_a_pending_order_is_moved_and_its_trigger_follows(account, market):
    order = place(account, market, type="limit", price=D("1.0950"), sl=D("1.0900"))

    moved = services.order_modify(order=order, price=D("1.0960"), tp=D("1.1100"))
    assert (moved.price, moved.sl, moved.tp, moved.status) == (
        D("1.0960"),
        D("1.0900"),
        D("1.1100"),
        "pending",
    )
    [trigger] = [t for t in triggers_load(account_id=account.pk) if t.kind == "order"]
    assert trigger.threshold == D("1.0960")  # no markup in this group
    assert services.order_trigger(order_id=order.pk, tick=tick("1.0955", "1.0962")) is None  # above it
    services.order_trigger(order_id=order.pk, tick=tick("1.0958", "1.0960"))
    assert Deal.objects.get(order=order).price == D("1.0960")
    assert Position.objects.get().tp == D("1.1100")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"price": D("1.1010")}, "invalid_price"),  # a buy limit above the market
        ({"price": None}, "invalid_price"),  # a limit needs its price
        ({"stop_price": D("1.1050")}, "invalid_price"),  # a limit takes no stop
        ({"sl": D("1.0960")}, "invalid_sl"),  # above the entry of a buy
        ({"expires_at": timezone.now() + timedelta(hours=1)}, "invalid_expires_at"),  # not GTD
        ({"price": "abc"}, "invalid_price"),
    ],
)
def test_a_bad_modification_is_refused_and_the_order_is_unchanged(account, market, change, code):
    order = place(account, market, type="limit", price=D("1.0950"), sl=D("1.0900"))
    before = Order.objects.filter(pk=order.pk).values().get()
    with pytest.raises(services.ServiceError) as refused:
        services.order_modify(order=order, **change)
    assert refused.value.code == code
    assert Order.objects.filter(pk=order.pk).values().get() == before


def test_only_pending_orders_are_modified_and_an_armed_stop_limit_keeps_its_stop(account, market):
    filled = place(account, market)
    with pytest.raises(services.ServiceError) as done:
        services.order_modify(order=filled, sl=D("1.0900"))
    assert (done.value.code, done.value.status_code) == ("order_not_pending", 409)

    order = place(account, market, type="stop_limit", stop_price=D("1.1050"), price=D("1.1060"))
    services.order_trigger(order_id=order.pk, tick=tick("1.1068", "1.1070"))  # stop reached, limit rests
    market.set("EURUSD", "1.1070", "1.1072")
    with pytest.raises(services.ServiceError) as armed:
        services.order_modify(order=order, stop_price=D("1.1080"), price=D("1.1065"))
    assert armed.value.code == "invalid_stop_price"
    moved = services.order_modify(order=order, price=D("1.1065"))
    assert (moved.stop_price, moved.price) == (D("1.1050"), D("1.1065"))


def test_a_good_till_date_order_gets_a_new_expiry_but_not_a_past_one(account, market):
    expires = timezone.now() + timedelta(hours=1)
    order = place(account, market, type="limit", price=D("1.0950"), time_in_force="gtd", expires_at=expires)
    later = expires + timedelta(days=1)
    assert services.order_modify(order=order, expires_at=later).expires_at == later
    with pytest.raises(services.ServiceError) as past:
        services.order_modify(order=order, expires_at=timezone.now() - timedelta(seconds=1))
    assert past.value.code == "invalid_expires_at"
    with pytest.raises(services.ServiceError):
        services.order_modify(order=order, expires_at=None)
    assert Order.objects.get(pk=order.pk).expires_at == later
