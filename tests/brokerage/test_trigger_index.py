import time
from decimal import Decimal as D

from brokerage.triggers import Trigger, TriggerIndex


def sl(position_id: int, level: str, *, side: str = "buy", account: int = 1, markup: str = "0") -> Trigger:
    return Trigger.make(
        kind="sl",
        object_id=position_id,
        account_id=account,
        symbol="EURUSD",
        group_id=1,
        instrument_id=1,
        side=side,
        rule="sl",
        level=D(level),
        markup=D(markup),
    )


def limit(order_id: int, level: str, *, side: str = "buy", account: int = 1) -> Trigger:
    return Trigger.make(
        kind="order",
        object_id=order_id,
        account_id=account,
        symbol="EURUSD",
        group_id=1,
        instrument_id=1,
        side=side,
        rule="limit",
        level=D(level),
        markup=D(0),
    )


def test_a_quote_fires_crossed_triggers_once():
    index = TriggerIndex()
    index.add(sl(1, "1.0950"))
    index.add(sl(2, "1.0900"))
    assert index.fire("EURUSD", D("1.0951"), D("1.0953")) == []
    assert [t.key for t in index.fire("EURUSD", D("1.0950"), D("1.0952"))] == [("sl", 1)]
    assert index.fire("EURUSD", D("1.0950"), D("1.0952")) == []
    assert [t.key for t in index.fire("EURUSD", D("1.0800"), D("1.0802"))] == [("sl", 2)]
    assert len(index) == 0


def test_other_symbols_and_sides_are_untouched():
    index = TriggerIndex()
    index.add(sl(1, "1.1050", side="sell"))  # a short's SL watches the ask rising
    index.add(limit(2, "1.0950"))  # a buy limit watches the ask falling
    assert index.fire("GBPUSD", D("1.2"), D("1.3")) == []
    assert [t.key for t in index.fire("EURUSD", D("1.1049"), D("1.1051"))] == [("sl", 1)]
    assert [t.key for t in index.fire("EURUSD", D("1.0940"), D("1.0942"))] == [("order", 2)]


def test_markup_is_folded_into_the_raw_threshold():
    index = TriggerIndex()
    index.add(sl(1, "1.0950", markup="0.0001"))  # the client bid is the raw bid - 0.0001
    assert index.fire("EURUSD", D("1.0952"), D("1.0954")) == []
    assert [t.key for t in index.fire("EURUSD", D("1.0951"), D("1.0953"))] == [("sl", 1)]


def test_replacing_an_accounts_triggers_leaves_the_others():
    index = TriggerIndex()
    index.add(sl(1, "1.0950", account=1))
    index.add(sl(2, "1.0950", account=2))
    index.replace_account(1, [sl(3, "1.0900", account=1)])
    assert ("sl", 1) not in index and ("sl", 2) in index and ("sl", 3) in index
    index.add(sl(2, "1.0800", account=2))  # re-adding moves it
    assert [t.key for t in index.fire("EURUSD", D("1.0900"), D("1.0902"))] == [("sl", 3)]
    index.remove(("sl", 2))
    assert len(index) == 0


def test_checking_a_quote_against_10000_triggers_takes_well_under_a_millisecond():
    index = TriggerIndex()
    for i in range(10_000):  # longs' stops below the market, shorts' above
        offset = D(i) / 100_000
        level = D("1.0000") + offset if i % 2 else D("1.2001") - offset
        index.add(sl(i, str(level), side="buy" if i % 2 else "sell", account=i % 50))
    started = time.perf_counter()
    for _ in range(100):
        index.fire("EURUSD", D("1.10000"), D("1.10002"))
    assert (time.perf_counter() - started) / 100 < 0.001
    assert len(index) == 10_000
