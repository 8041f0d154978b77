"""The kill switch: each trading state against each kind of order, each scope and the most
restrictive rule, the states' cache, the automatic states (stale prices, the house's daily loss) and
their auto-resume, and every change recorded, audited and notified."""

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from django.utils import timezone

from brokerage import services
from brokerage.models import (
    ClientGroup,
    Order,
    OrderStatus,
    Position,
    PositionStatus,
    TradingScope,
    TradingState,
    TradingStateChange,
)
from brokerage.pricing import Tick
from brokerage.router import Internal, RouteDecision, RouteRequest
from brokerage.selectors import trading_states
from kernel.errors import ServiceError
from marketdata.models import Instrument, Venue
from tests.support.trading import open_account
from users.models import AuditLog, User

from .conftest import Market

pytestmark = pytest.mark.django_db

Switch = Callable[..., TradingState]


class ToTheLp(Internal):
    def route(self, request: RouteRequest) -> RouteDecision:
        return RouteDecision(book="A", session="lp-test", venue="lp")


to_the_lp = ToTheLp()


@pytest.fixture
def switch(operator: User, django_capture_on_commit_callbacks: Any) -> Switch:
    """An operator sets a state, committed (the states' version moves on, the event goes out)."""

    def set_state(
        state: str, scope: str = TradingScope.GLOBAL, reason: str = "test", **target: Any
    ) -> TradingState:
        with django_capture_on_commit_callbacks(execute=True):
            return services.trading_state_set(
                scope=scope, state=state, reason=reason, actor=operator, **target
            )

    return set_state


def tick(bid: str, ask: str) -> Tick:
    return Tick(D(bid), D(ask))


def buy(account: Any, volume: str = "1", symbol: str = "EURUSD", **kwargs: Any) -> Order:
    return services.order_submit(account=account, symbol=symbol, side="buy", volume=D(volume), **kwargs)


# -- each state against each kind of order -----------------------------------------------------------
# Each kind sets up what it needs while trading is active, then `switch` sets the state, then it acts.
# It answers "ok" (done), "waits" (a trigger left armed, nothing done) or the refusal's error code.


def _refused(action: Callable[[], Any]) -> str | None:
    try:
        action()
    except ServiceError as exc:
        return exc.code
    return None


def market_open(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    set_state()
    return _refused(lambda: buy(account)) or "ok"


def market_close(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    buy(netting)
    set_state()
    refused = _refused(
        lambda: services.order_submit(account=netting, symbol="EURUSD", side="sell", volume=D("1"))
    )
    return refused or ("ok" if not Position.objects.filter(account=netting, status="open").exists() else "?")


def partial_close(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    buy(account)
    set_state()
    position = Position.objects.get(account=account)
    refused = _refused(lambda: services.position_close(position=position, volume=D("0.5")))
    position.refresh_from_db()
    return refused or ("ok" if position.volume == D("0.5") else "?")


def pending_placement(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    set_state()
    return _refused(lambda: buy(account, type="limit", price=D("1.0950"))) or "ok"


def pending_trigger(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    order = buy(account, type="limit", price=D("1.0950"))
    set_state()
    filled = services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950"))
    order.refresh_from_db()
    if filled is None:
        return "waits" if order.status == OrderStatus.PENDING else "?"
    return "ok" if order.status == OrderStatus.FILLED else "?"


def _protective(kind: str, level: str, at: Tick) -> Callable[..., str]:
    def run(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
        buy(account, **{kind: D(level)})
        set_state()
        position = Position.objects.get(account=account)
        deal = services.position_trigger(position_id=position.pk, kind=kind, tick=at)  # type: ignore[arg-type]
        position.refresh_from_db()
        if deal is None:
            return "waits" if position.status == PositionStatus.OPEN else "?"
        return "ok" if position.close_reason == kind else "?"

    run.__name__ = kind
    return run


sl = _protective("sl", "1.0900", tick("1.0899", "1.0901"))
tp = _protective("tp", "1.1100", tick("1.1101", "1.1103"))


def stop_out(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    buy(account, "4")  # 5000 balance, 4400.80 margin
    market.set("EURUSD", "1.0900", "1.0902")  # -4080: equity 920, level 21 %
    set_state()
    deals = services.account_margin_check(account_id=account.pk)
    return "ok" if [d.reason for d in deals] == ["stop_out"] else "?"


def a_book(account: Any, netting: Any, market: Market, set_state: Callable[[], None]) -> str:
    set_state()
    refused = _refused(lambda: buy(account))
    if refused:
        return refused
    return "ok" if Order.objects.get(account=account).status == OrderStatus.ROUTED else "?"


KINDS = [
    market_open,
    market_close,
    partial_close,
    pending_placement,
    pending_trigger,
    sl,
    tp,
    stop_out,
    a_book,
]

# What each state does to each kind (the documented rules, docs/operators.md#kill-switch).
EXPECTED = {
    "active": dict.fromkeys([k.__name__ for k in KINDS], "ok"),
    "reduce_only": {
        "market_open": "reduce_only",
        "market_close": "ok",
        "partial_close": "ok",
        "pending_placement": "reduce_only",
        "pending_trigger": "waits",
        "sl": "ok",
        "tp": "ok",
        "stop_out": "ok",
        "a_book": "reduce_only",
    },
    "halted": {
        "market_open": "trading_halted",
        "market_close": "trading_halted",
        "partial_close": "trading_halted",
        "pending_placement": "trading_halted",
        "pending_trigger": "waits",
        "sl": "waits",
        "tp": "waits",
        "stop_out": "ok",
        "a_book": "trading_halted",
    },
}


@pytest.mark.parametrize("state", ["active", "reduce_only", "halted"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_each_state_against_each_kind_of_order(
    state: str,
    kind: Callable[..., str],
    alice: User,
    group: ClientGroup,
    netting_group: ClientGroup,
    market: Market,
    switch: Switch,
    settings: Any,
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    if kind is a_book:
        settings.ORDER_GATEWAY = f"{__name__}.to_the_lp"
    account, netting = open_account(alice, group), open_account(alice, netting_group)

    assert kind(account, netting, market, lambda: switch(state)) == EXPECTED[state][kind.__name__]


def test_a_waiting_pending_order_fills_once_trading_resumes(
    account: Any, market: Market, switch: Switch
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    order = buy(account, type="limit", price=D("1.0950"))
    switch("halted")
    assert services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950")) is None
    switch("active")
    filled = services.order_trigger(order_id=order.pk, tick=tick("1.0948", "1.0950"))
    assert filled is not None and filled.status == OrderStatus.FILLED


def test_reduce_only_takes_an_order_that_reduces_the_netting_position_but_not_one_that_flips_it(
    alice: User, netting_group: ClientGroup, market: Market, switch: Switch
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    netting = open_account(alice, netting_group)
    buy(netting)
    switch("reduce_only")
    sell = services.order_submit
    with pytest.raises(ServiceError) as refused:
        sell(account=netting, symbol="EURUSD", side="sell", volume=D("2"))  # would open 1 lot short
    assert refused.value.code == "reduce_only"
    sell(account=netting, symbol="EURUSD", side="sell", volume=D("0.4"))
    assert Position.objects.get(account=netting).volume == D("0.6")
    # a pending order that reduces may rest, and fills while it still reduces
    order = sell(
        account=netting, symbol="EURUSD", side="sell", volume=D("0.6"), type="limit", price=D("1.1050")
    )
    filled = services.order_trigger(order_id=order.pk, tick=tick("1.1050", "1.1052"))
    assert filled is not None and filled.status == OrderStatus.FILLED
    assert not Position.objects.filter(account=netting, status="open").exists()


def test_a_halted_instrument_leaves_its_positions_open_in_a_bulk_close(
    account: Any, market: Market, switch: Switch, instruments: dict[str, Instrument]
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("GBPUSD", "1.2700", "1.2702")
    buy(account)
    buy(account, symbol="GBPUSD")
    switch("halted", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])
    deals = services.positions_close_bulk(account=account)
    assert [d.instrument.symbol for d in deals] == ["GBPUSD"]
    assert Position.objects.get(account=account, status="open").instrument.symbol == "EURUSD"


# -- scopes and the most restrictive rule ------------------------------------------------------------


def test_each_scope_halts_what_it_covers_and_nothing_else(
    alice: User,
    group: ClientGroup,
    market: Market,
    switch: Switch,
    instruments: dict[str, Instrument],
    settings: Any,
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("GBPUSD", "1.2700", "1.2702")
    other_group = ClientGroup.objects.create(name="other", currency="USD", leverage=100)
    mine, theirs = open_account(alice, group), open_account(alice, other_group)
    sim = Venue.objects.get(code="sim")
    lp = Venue.objects.create(code="lp", name="LP", kind="fix", priority=5)

    def refused(account: Any, symbol: str = "EURUSD") -> str | None:
        return _refused(lambda: buy(account, "0.1", symbol=symbol))

    switch("halted", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])
    assert (refused(mine), refused(theirs), refused(mine, "GBPUSD")) == (
        "trading_halted",
        "trading_halted",
        None,
    )
    switch("active", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])

    switch("halted", TradingScope.GROUP, group=group)
    assert (refused(mine), refused(theirs)) == ("trading_halted", None)
    switch("active", TradingScope.GROUP, group=group)

    switch("halted", TradingScope.VENUE, venue=sim)  # the venue pricing both symbols
    assert (refused(mine), refused(theirs, "GBPUSD")) == ("trading_halted", "trading_halted")
    switch("active", TradingScope.VENUE, venue=sim)

    switch("halted", TradingScope.VENUE, venue=lp)  # the LP: only A-Book orders routed to it
    assert refused(mine) is None
    settings.ORDER_GATEWAY = f"{__name__}.to_the_lp"
    assert refused(mine) == "trading_halted"
    switch("active", TradingScope.VENUE, venue=lp)
    assert refused(mine) is None

    switch("halted")
    assert (refused(mine), refused(theirs, "GBPUSD")) == ("trading_halted", "trading_halted")


def test_the_most_restrictive_of_the_scopes_applies(
    account: Any, market: Market, switch: Switch, instruments: dict[str, Instrument], group: ClientGroup
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("GBPUSD", "1.2700", "1.2702")
    switch("reduce_only")
    switch("halted", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])
    switch("active", TradingScope.GROUP, group=group)  # an active scope lifts nothing
    for symbol, code in (("EURUSD", "trading_halted"), ("GBPUSD", "reduce_only")):
        with pytest.raises(ServiceError) as refused:
            buy(account, "0.1", symbol=symbol)
        assert refused.value.code == code and refused.value.status_code == 409
    switch("active")
    buy(account, "0.1", symbol="GBPUSD")
    assert _refused(lambda: buy(account, "0.1")) == "trading_halted"


def test_the_states_are_read_from_the_process_cache_until_one_changes(
    switch: Switch, instruments: dict[str, Instrument], django_assert_num_queries: Any
) -> None:
    switch("reduce_only")
    assert trading_states().everything is not None  # computed and kept
    with django_assert_num_queries(0):
        assert trading_states().everything is not None
    switch("halted", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])
    with django_assert_num_queries(1):
        states = trading_states()
    assert states.instruments[instruments["EURUSD"].pk].state == "halted"


def test_a_scope_names_its_target_and_nothing_else(
    operator: User, instruments: dict[str, Instrument]
) -> None:
    for scope, target in (
        (TradingScope.INSTRUMENT, {}),
        (TradingScope.GLOBAL, {"instrument": instruments["EURUSD"]}),
        (TradingScope.GROUP, {"instrument": instruments["EURUSD"]}),
    ):
        with pytest.raises(ServiceError) as refused:
            services.trading_state_set(scope=scope, state="halted", actor=operator, **target)
        assert (refused.value.code, refused.value.status_code) == ("invalid_scope", 400)
    assert not TradingState.objects.exists()


# -- recorded, audited, notified ----------------------------------------------------------------------


def test_an_operators_change_is_recorded_audited_and_notified(
    switch: Switch, operator: User, system_events: list[Any]
) -> None:
    switch("halted", reason="exchange outage")
    switch("halted", reason="exchange outage")  # no change: nothing written, nothing sent
    switch("active", reason="over")

    changes = list(
        TradingStateChange.objects.order_by("id").values_list("state_before", "state", "actor", "source")
    )
    assert changes == [
        ("active", "halted", operator.pk, "manual"),
        ("halted", "active", operator.pk, "manual"),
    ]
    audit = list(AuditLog.objects.filter(action="trading_state.set").order_by("id"))
    assert [(a.actor_id, a.details["state"], a.details["reason"]) for a in audit] == [
        (operator.pk, "halted", "exchange outage"),
        (operator.pk, "active", "over"),
    ]
    assert [(e["kind"], e["subject"]) for e in system_events] == [("trading.state", "global")] * 2
    assert "Active -> Halted (Manual): exchange outage" in system_events[0]["text"]


# -- automatic states ---------------------------------------------------------------------------------


@pytest.fixture
def auto(settings: Any, django_capture_on_commit_callbacks: Any) -> Callable[..., list[TradingState]]:
    settings.KILL_SWITCH_STALE_PRICE_S = 20
    settings.KILL_SWITCH_AUTO_RESUME = True

    def watch(**kwargs: Any) -> list[TradingState]:
        with django_capture_on_commit_callbacks(execute=True):
            return services.trading_states_watch(**kwargs)

    return watch


def _instrument_state(symbol: str) -> tuple[str, str] | None:
    row = TradingState.objects.filter(instrument__symbol=symbol).first()
    return (row.state, row.source) if row else None


def test_an_instrument_without_a_tradable_price_is_halted_and_resumed_when_it_returns(
    auto: Callable[..., list[TradingState]],
    instruments: dict[str, Instrument],
    market: Market,
    account: Any,
    system_events: list[Any],
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("GBPUSD", "1.2700", "1.2702", age_ms=25_000)  # older than 20 s
    market.set("USDJPY", "150.000", "150.014", tradable=False)
    auto()
    assert _instrument_state("EURUSD") is None
    assert _instrument_state("GBPUSD") == ("halted", "auto_stale_price")
    assert _instrument_state("USDJPY") == ("halted", "auto_stale_price")
    assert TradingState.objects.get(instrument__symbol="GBPUSD").auto_resume
    assert _refused(lambda: buy(account, "0.1", symbol="GBPUSD")) == "trading_halted"
    assert not TradingStateChange.objects.exclude(actor=None).exists()
    assert not AuditLog.objects.filter(action="trading_state.set").exists()  # no operator acted
    assert {"GBPUSD", "USDJPY"} <= {e["subject"].split()[-1] for e in system_events}

    market.set("GBPUSD", "1.2700", "1.2702")
    assert auto() != []
    assert _instrument_state("GBPUSD") == ("active", "auto_stale_price")
    assert _instrument_state("USDJPY") == ("halted", "auto_stale_price")
    buy(account, "0.1", symbol="GBPUSD")
    assert auto() == []  # nothing changed, nothing written


def test_without_auto_resume_an_automatic_halt_stays_until_an_operator_resumes(
    auto: Callable[..., list[TradingState]],
    settings: Any,
    instruments: dict[str, Instrument],
    market: Market,
    switch: Switch,
) -> None:
    settings.KILL_SWITCH_AUTO_RESUME = False
    market.set("EURUSD", "1.1000", "1.1002", age_ms=25_000)
    auto()
    market.set("EURUSD", "1.1000", "1.1002")
    auto()
    assert _instrument_state("EURUSD") == ("halted", "auto_stale_price")
    switch("active", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])
    assert _instrument_state("EURUSD") == ("active", "manual")


def test_a_manual_state_is_never_overwritten_by_an_automatic_one(
    auto: Callable[..., list[TradingState]],
    instruments: dict[str, Instrument],
    market: Market,
    switch: Switch,
) -> None:
    market.set("EURUSD", "1.1000", "1.1002", age_ms=25_000)
    switch("reduce_only", TradingScope.INSTRUMENT, instrument=instruments["EURUSD"])
    auto()
    assert _instrument_state("EURUSD") == ("reduce_only", "manual")

    market.set("GBPUSD", "1.2700", "1.2702", age_ms=25_000)
    auto()
    switch("active", TradingScope.INSTRUMENT, instrument=instruments["GBPUSD"])  # resumed by hand
    auto()
    assert _instrument_state("GBPUSD") == ("active", "manual")  # holds while that stale price lasts
    market.set("GBPUSD", "1.2700", "1.2702", age_ms=-60_000)  # a new price, stamped a minute ahead,
    auto(now=timezone.now() + timedelta(seconds=90))  # and stale 20 s after that: a new cause
    assert _instrument_state("GBPUSD") == ("halted", "auto_stale_price")


def test_the_house_daily_loss_past_its_limit_puts_everything_reduce_only_until_the_next_day(
    auto: Callable[..., list[TradingState]],
    settings: Any,
    account: Any,
    market: Market,
) -> None:
    settings.KILL_SWITCH_STALE_PRICE_S = 0
    settings.KILL_SWITCH_DAILY_LOSS_LIMIT = {"USD": D("1000")}
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account)
    auto()
    assert not TradingState.objects.exists()
    market.set("EURUSD", "1.1200", "1.1202")
    services.position_close(position=Position.objects.get(account=account))  # the client wins 1980
    auto()
    row = TradingState.objects.get(scope="global")
    assert (row.state, row.source, row.auto_resume) == ("reduce_only", "auto_daily_loss", True)
    assert "1980.00 USD" in row.reason
    assert _refused(lambda: buy(account, "0.1")) == "reduce_only"

    auto(now=timezone.now() + timedelta(days=1))  # a new day: no loss yet
    row.refresh_from_db()
    assert row.state == "active"
    buy(account, "0.1")


def test_the_watch_is_a_beat_job() -> None:
    from brokerage import tasks
    from livermore.schedules import JOBS

    assert any(job.task == "brokerage.tasks.trading_states_watch" for job in JOBS)
    assert tasks.trading_states_watch() == 0
