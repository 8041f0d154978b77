from decimal import Decimal as D

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from brokerage import services
from brokerage.models import LedgerTransaction, Position, TransactionKind
from brokerage.quotes import redis_quotes
from brokerage.selectors import account_summary, ledger_balance, margin_watchlist
from kernel.errors import ServiceError
from tests.support.trading import open_account

pytestmark = pytest.mark.django_db


def buy(account, symbol, volume="1"):
    return services.order_submit(account=account, symbol=symbol, side="buy", volume=D(volume))


def test_stop_out_closes_the_largest_loss_first_until_the_level_recovers(alice, group, market):
    account = open_account(alice, group, balance="3000")
    market.set("GBPUSD", "1.2700", "1.2702")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "GBPUSD")  # opened first: closing in id order would pick it
    buy(account, "EURUSD")
    market.set("GBPUSD", "1.2650", "1.2652")  # -520
    market.set("EURUSD", "1.0900", "1.0902")  # -1020: equity 1460 / re-marked margin 2355.40 = 61.99 %
    assert services.account_margin_check(account_id=account.pk) == []
    account.refresh_from_db()
    assert account.margin_call_at is not None
    assert margin_watchlist(symbols=["EURUSD"], quotes=redis_quotes) == [account.pk]

    market.set("EURUSD", "1.0850", "1.0852")  # -1520: equity 960, level 40.50 % <= 50 %
    deals = services.account_margin_check(account_id=account.pk)
    assert [(d.instrument.symbol, d.reason, d.price, d.realized_pnl) for d in deals] == [
        ("EURUSD", "stop_out", D("1.0850"), D("-1520"))
    ]
    gbp = Position.objects.get(instrument__symbol="GBPUSD")
    assert gbp.status == "open"
    account.refresh_from_db()
    summary = account_summary(account=account)
    assert (
        summary.margin_level == D("960.00") / D("1265.20") * 100
    )  # 75.88 % (GBPUSD re-marked at its ask 1.2652): back above the stop-out level: GBPUSD stays open
    assert account.margin_call_at is not None  # still below the margin-call level


def test_stop_out_keeps_going_while_the_level_stays_below(alice, group, market):
    account = open_account(alice, group, balance="3000")
    market.set("GBPUSD", "1.2700", "1.2702")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "GBPUSD")
    buy(account, "EURUSD")
    market.set("GBPUSD", "1.2500", "1.2502")  # -2020
    market.set("EURUSD", "1.0900", "1.0902")  # -1020
    deals = services.account_margin_check(account_id=account.pk)
    assert [d.instrument.symbol for d in deals] == ["GBPUSD", "EURUSD"]
    account.refresh_from_db()
    assert account.balance == D("0")  # 3000 - 3040 = -40, restored by negative balance protection
    assert account.margin_call_at is None


def test_negative_balance_protection_restores_zero_with_a_house_posting(alice, group, market):
    account = open_account(alice, group, balance="1200")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD")
    market.set("EURUSD", "1.0800", "1.0802")  # a gap: -2020 against a 1200 balance
    deals = services.account_margin_check(account_id=account.pk)
    assert [d.realized_pnl for d in deals] == [D("-2020")]
    account.refresh_from_db()
    assert account.balance == D("0")
    txn = LedgerTransaction.objects.get(kind=TransactionKind.NEGATIVE_BALANCE_COMPENSATION)
    legs = {p.ledger_account.kind: p.amount for p in txn.postings.select_related("ledger_account")}
    assert legs == {"client": D("820"), "compensation": D("-820")}
    compensation = services.house_account(kind="compensation", currency="USD")
    assert ledger_balance(ledger_account=compensation) == D("-820")


def test_without_negative_balance_protection_the_deficit_stays(alice, group, market):
    group.negative_balance_protection = False
    group.save()
    account = open_account(alice, group, balance="1200")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD")
    market.set("EURUSD", "1.0800", "1.0802")
    services.account_margin_check(account_id=account.pk)
    account.refresh_from_db()
    assert account.balance == D("-820")


def test_no_stop_out_without_a_tradable_price(alice, group, market):
    account = open_account(alice, group, balance="1200")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD")
    market.set("EURUSD", "1.0800", "1.0802", tradable=False)
    assert services.account_margin_check(account_id=account.pk) == []
    assert Position.objects.get().status == "open"


def test_no_margin_decision_while_any_position_is_unpriced(alice, group, market):
    account = open_account(alice, group, balance="3000")
    market.set("GBPUSD", "1.2700", "1.2702")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "GBPUSD")
    buy(account, "EURUSD")
    market.set("EURUSD", "1.0800", "1.0802")  # -2020 on EURUSD alone: below stop-out if GBPUSD were 0
    market.clear("GBPUSD")  # its PnL is unknown: it might have gained or lost anything
    assert account_summary(account=account).unpriced == ["GBPUSD"]
    assert services.account_margin_check(account_id=account.pk) == []
    assert set(Position.objects.values_list("status", flat=True)) == {"open"}
    account.refresh_from_db()
    assert account.margin_call_at is None


def test_a_healthy_account_is_left_alone(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD")
    assert services.account_margin_check(account_id=account.pk) == []
    account.refresh_from_db()
    assert account.margin_call_at is None
    assert margin_watchlist(symbols=["EURUSD"], quotes=redis_quotes) == []


def test_a_margin_call_and_a_stop_out_are_system_events_once_committed(
    alice, group, market, system_events, django_capture_on_commit_callbacks
):
    account = open_account(alice, group, balance="3000")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD", "2")
    market.set("EURUSD", "1.0920", "1.0922")  # below the margin-call level, above the stop-out level
    with django_capture_on_commit_callbacks(execute=False) as pending:
        services.account_margin_check(account_id=account.pk)
    assert system_events == []  # nothing before the commit
    for callback in pending:
        callback()
    assert [(e["kind"], e["subject"]) for e in system_events] == [
        ("account.margin_call", f"account {account.number}")
    ]
    assert "call at" in system_events[0]["text"]

    system_events.clear()
    market.set("EURUSD", "1.0850", "1.0852")
    with django_capture_on_commit_callbacks(execute=True):
        services.account_margin_check(account_id=account.pk)
    kinds = [e["kind"] for e in system_events]
    assert "account.stop_out" in kinds
    (stop,) = [e for e in system_events if e["kind"] == "account.stop_out"]
    assert stop["subject"] == f"account {account.number}" and "stop-out at" in stop["text"]


def test_orders_are_counted_by_outcome_and_timed(alice, group, market):
    from prometheus_client import REGISTRY

    def counts():
        by_outcome = {
            sample.labels["outcome"]: sample.value
            for family in REGISTRY.collect()
            if family.name == "livermore_orders"
            for sample in family.samples
            if sample.name == "livermore_orders_total"
        }
        timed = REGISTRY.get_sample_value("livermore_order_latency_seconds_count") or 0.0
        return by_outcome, timed

    before, timed_before = counts()
    account = open_account(alice, group, balance="3000")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD")
    with pytest.raises(services.ServiceError) as refused:
        buy(account, "NOPE")
    after, timed_after = counts()
    code = refused.value.code
    assert after["filled"] - before.get("filled", 0) == 1
    assert after[code] - before.get(code, 0) == 1
    assert timed_after - timed_before == 2


def sell(account, symbol, volume="1"):
    return services.order_submit(account=account, symbol=symbol, side="sell", volume=D(volume))


def test_a_price_move_re_marks_margin_free_margin_and_level_and_posts_nothing(alice, group, market):
    account = open_account(alice, group, balance="3000")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "EURUSD")
    position = Position.objects.get()
    assert position.margin == D("1100.20")  # 1 lot x 100000 x 1.1002 (the ask) / 100
    transactions = LedgerTransaction.objects.count()

    market.set("EURUSD", "1.1200", "1.1202")  # PnL +1980 at the bid
    summary = account_summary(account=account)
    assert summary.equity == D("4980.00")
    assert summary.margin == D("1120.20")  # re-marked at the ask now: 100000 x 1.1202 / 100
    assert summary.free_margin == D("3859.80")
    assert summary.margin_level == D("4980.00") / D("1120.20") * 100

    market.set("EURUSD", "1.0500", "1.0502")  # PnL -5020
    summary = account_summary(account=account)
    assert (summary.equity, summary.margin, summary.free_margin) == (
        D("-2020.00"),
        D("1050.20"),
        D("-3070.20"),
    )
    assert summary.margin_level == D("-2020.00") / D("1050.20") * 100

    position.refresh_from_db()
    assert position.margin == D("1100.20")  # the stored record (at the open price) is left as it was
    assert LedgerTransaction.objects.count() == transactions  # margin is not a ledger posting


def test_a_short_is_re_marked_at_the_bid_and_a_base_currency_margin_does_not_move(alice, group, market):
    account = open_account(alice, group, balance="5000")
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("USDJPY", "150.000", "150.014")
    sell(account, "EURUSD")  # 1100.00 at the bid
    buy(account, "USDJPY")  # USD is the base: 1 lot x 100000 / 100 = 1000 USD at any price
    market.set("EURUSD", "1.1300", "1.1302")
    market.set("USDJPY", "160.000", "160.014")
    summary = account_summary(account=account)
    assert summary.margin == D("1130.00") + D("1000.00")


def test_stop_out_uses_the_re_marked_margin(alice, group, market):
    account = open_account(alice, group, balance="5580")
    market.set("EURUSD", "1.1000", "1.1002")
    sell(account, "EURUSD")  # margin 1100.00 at the open price
    market.set("EURUSD", "1.1500", "1.1502")  # PnL -5020 at the ask: equity 560
    # 560 / 1100.00 = 50.91 % at the open-price margin, 560 / 1150.00 = 48.70 % re-marked (at the bid)
    assert account_summary(account=account).margin_level == D("560.00") / D("1150.00") * 100
    deals = services.account_margin_check(account_id=account.pk)
    assert [(d.reason, d.price, d.realized_pnl) for d in deals] == [("stop_out", D("1.1502"), D("-5020"))]
    account.refresh_from_db()
    assert account.balance == D("560")


def test_margin_call_uses_the_re_marked_margin(alice, group, market):
    account = open_account(alice, group, balance="6140")
    market.set("EURUSD", "1.1000", "1.1002")
    sell(account, "EURUSD")
    market.set("EURUSD", "1.1500", "1.1502")  # equity 1120: 101.82 % at 1100.00, 97.39 % at 1150.00
    assert services.account_margin_check(account_id=account.pk) == []
    account.refresh_from_db()
    assert account.margin_call_at is not None
    assert margin_watchlist(symbols=["EURUSD"], quotes=redis_quotes) == [account.pk]

    market.set("EURUSD", "1.0900", "1.0902")  # equity 6240, margin 1090.00: out of margin call
    assert services.account_margin_check(account_id=account.pk) == []
    account.refresh_from_db()
    assert account.margin_call_at is None


def test_an_order_is_checked_against_the_re_marked_margin(alice, group, market):
    account = open_account(alice, group, balance="6140")
    market.set("EURUSD", "1.1000", "1.1002")
    sell(account, "EURUSD")
    market.set("EURUSD", "1.1500", "1.1502")  # free margin 1120 - 1150.00 = -30.00 (20.00 at open price)
    market.set("GBPUSD", "1.0000", "1.0000")
    with pytest.raises(ServiceError) as refused:
        buy(account, "GBPUSD", "0.01")  # needs 10.00
    assert refused.value.code == "insufficient_margin"


def test_the_margin_sweep_reads_as_many_statements_for_many_positions_as_for_one(alice, group, market):
    """The trigger watcher screens every account holding a moved symbol twice a second: its reads
    must not grow with the positions or the accounts (it built three models per position)."""
    market.set("EURUSD", "1.1000", "1.1002")
    first = open_account(alice, group, balance="3000")
    buy(first, "EURUSD")

    def statements() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert margin_watchlist(symbols=["EURUSD"], quotes=redis_quotes) == []
        return len(queries)

    statements()  # the first fills the process's instrument cache
    one = statements()
    for _ in range(10):
        account = open_account(alice, group, balance="100000")
        for _ in range(5):
            buy(account, "EURUSD", "0.1")
    assert statements() == one
    market.set("EURUSD", "1.0800", "1.0802")  # -2020 on the first: in margin call, the rest not
    assert margin_watchlist(symbols=["EURUSD"], quotes=redis_quotes) == [first.pk]
    assert margin_watchlist(symbols=["GBPUSD"], quotes=redis_quotes) == []
