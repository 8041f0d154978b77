"""The trigger watcher in its real setting: quotes in, work on a thread pool, sync over Redis pub/sub."""

import time
from collections.abc import Callable, Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from prometheus_client import REGISTRY

from brokerage import services
from brokerage.models import Deal, Order, Position
from brokerage.watcher import TriggerWatcher
from tests.support.streams import StreamTap
from tests.support.trading import open_account
from tests.support.users import make_role_user
from tests.support.waiting import wait_until
from users.roles import RISK

pytestmark = pytest.mark.django_db(transaction=True)


async def db_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run fn in asgiref's worker thread and close the connection it opened there."""

    def call() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(call)()


@pytest.fixture
def watcher() -> Iterator[TriggerWatcher]:
    w = TriggerWatcher(workers=2, margin_interval_s=0.1)
    yield w
    w.stop()


def executions(kind: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("livermore_trigger_executions_total", {"kind": kind, "outcome": outcome})
        or 0.0
    )


def test_it_executes_stop_losses_and_pending_orders_from_quotes(account, market, watcher):
    before = {(k, o): executions(k, o) for k, o in (("sl", "closed"), ("pending", "filled"), ("sl", "none"))}
    market.set("EURUSD", "1.1000", "1.1002")
    opened = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1), sl=D("1.0950"))
    position = Position.objects.get(deals__order=opened)
    watcher(market.selected("EURUSD", "1.1000", "1.1002"))
    assert watcher.ready.wait(10)
    assert ("sl", position.pk) in watcher.index

    # Placed after the watcher started: it learns of it over pub/sub.
    pending = services.order_submit(
        account=account, symbol="EURUSD", side="buy", volume=D(1), type="limit", price=D("1.0900")
    )
    wait_until(lambda: ("order", pending.pk) in watcher.index)

    watcher(market.selected("EURUSD", "1.0950", "1.0952"))
    watcher(market.selected("EURUSD", "1.0949", "1.0951"))  # also beyond: must not close twice
    wait_until(lambda: Position.objects.get(pk=position.pk).status == "closed")
    deal = Deal.objects.get(position=position, entry="out")
    assert (deal.price, deal.realized_pnl, deal.reason) == (D("1.0950"), D("-520"), "sl")

    watcher(market.selected("EURUSD", "1.0880", "1.0882"))  # a gap through the buy limit
    wait_until(lambda: Order.objects.get(pk=pending.pk).status == "filled")
    assert Deal.objects.get(order=pending).price == D("1.0882")
    assert Deal.objects.filter(position=position, entry="out").count() == 1
    wait_until(lambda: executions("pending", "filled") == before["pending", "filled"] + 1)
    assert executions("sl", "closed") == before["sl", "closed"] + 1
    # The second quote beyond the stop found the position closed, if it fired at all.
    assert executions("sl", "none") - before["sl", "none"] in (0, 1)


def test_it_ignores_untradable_quotes(account, market, watcher):
    market.set("EURUSD", "1.1000", "1.1002")
    opened = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1), sl=D("1.0950"))
    watcher(market.selected("EURUSD", "1.1000", "1.1002"))
    assert watcher.ready.wait(10)
    watcher(market.selected("EURUSD", "1.0900", "1.0902", tradable=False))
    time.sleep(0.3)
    assert Position.objects.get(deals__order=opened).status == "open"


def test_its_margin_sweep_stops_an_account_out(alice, group, market, watcher):
    account = open_account(alice, group, balance="1200")
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    watcher(market.selected("EURUSD", "1.1000", "1.1002"))
    assert watcher.ready.wait(10)
    watcher(market.selected("EURUSD", "1.0940", "1.0942"))  # equity 580 / 1100.20 margin: 52.7 %
    time.sleep(0.3)
    assert Position.objects.get().status == "open"
    account.refresh_from_db()
    assert account.margin_call_at is not None
    watcher(market.selected("EURUSD", "1.0930", "1.0932"))  # equity 480: 43.6 %
    wait_until(lambda: Position.objects.get().status == "closed")
    assert Position.objects.get().close_reason == "stop_out"


async def test_account_events_are_published_after_commit(account, market):
    async with StreamTap(account.stream_group) as tap:
        market.set("EURUSD", "1.1000", "1.1002")
        await db_call(
            services.order_submit, account=account, symbol="EURUSD", side="buy", volume=D(1), sl=D("1.0950")
        )
        first = await tap.receive()
        while first["event"] == "account":  # the fixture's deposit, if its event is late
            first = await tap.receive()
        frames = [first, await tap.receive(), await tap.receive()]
    assert [f["event"] for f in frames] == ["order", "deal", "position"]
    assert {f["channel"] for f in frames} == {f"account:{account.number}"}
    order, deal, position = (f["data"] for f in frames)
    assert (order["status"], order["fill_price"]) == ("filled", "1.1002")
    assert (deal["entry"], deal["price"]) == ("in", "1.1002")
    assert (position["volume"], position["sl"], position["margin"]) == ("1", "1.0950", "1100.20")


async def test_a_refused_order_publishes_nothing(alice, group, market):
    poor = await db_call(open_account, alice, group, "0")  # no deposit event in flight
    async with StreamTap(poor.stream_group) as tap:
        market.set("EURUSD", "1.1000", "1.1002")
        with pytest.raises(services.ServiceError):
            await db_call(services.order_submit, account=poor, symbol="EURUSD", side="buy", volume=D(1))
        with pytest.raises(TimeoutError):
            await tap.receive(within_s=0.5)


async def test_margin_call_and_stop_out_events_reach_the_owners_account_stream(alice, group, market):
    account = await db_call(open_account, alice, group, "1200")
    market.set("EURUSD", "1.1000", "1.1002")
    await db_call(services.order_submit, account=account, symbol="EURUSD", side="buy", volume=D(1))
    async with StreamTap(account.stream_group) as tap:
        market.set("EURUSD", "1.0940", "1.0942")  # equity 580 / 1094.20 margin re-marked at the ask: 53.0 %
        await db_call(services.account_margin_check, account_id=account.pk)
        frame = await tap.receive()
        while frame["event"] != "margin_call":  # the fill's own events may still be on their way
            frame = await tap.receive()
        assert frame["channel"] == f"account:{account.number}"
        assert (frame["data"]["margin_level"], frame["data"]["margin_call_level"]) == ("53.01", "100.00")

        market.set("EURUSD", "1.0930", "1.0932")  # equity 480 / 1093.20: 43.9 %
        await db_call(services.account_margin_check, account_id=account.pk)
        events = []
        while "stop_out" not in events:
            frame = await tap.receive()
            assert frame["channel"] == f"account:{account.number}"
            events.append(frame["event"])
    assert events[0] == "order" and "deal" in events  # the stop-out close, then the notice
    assert frame["data"]["margin_level_before"] == "43.91"
    assert frame["data"]["stop_out_level"] == "50.00"


def test_a_halted_stop_loss_waits_armed_without_going_to_the_service_then_runs_on_resume(
    account, market, watcher
):
    operator = make_role_user("risk1", RISK)
    market.set("EURUSD", "1.1000", "1.1002")
    opened = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1), sl=D("1.0950"))
    position = Position.objects.get(deals__order=opened)
    watcher(market.selected("EURUSD", "1.1000", "1.1002"))
    assert watcher.ready.wait(10)
    services.trading_state_set(scope="global", state="halted", reason="test", actor=operator)
    tried = sum(executions("sl", outcome) for outcome in ("none", "closed", "error"))

    for _ in range(3):  # crossing quotes while halted
        watcher(market.selected("EURUSD", "1.0949", "1.0951"))
    time.sleep(0.3)
    assert ("sl", position.pk) in watcher.index
    assert sum(executions("sl", outcome) for outcome in ("none", "closed", "error")) == tried
    assert Position.objects.get(pk=position.pk).status == "open"

    services.trading_state_set(scope="global", state="active", reason="test", actor=operator)
    watcher(market.selected("EURUSD", "1.0949", "1.0951"))
    wait_until(lambda: Position.objects.get(pk=position.pk).status == "closed")
