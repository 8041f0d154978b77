"""A market order's rows are written in one statement (kernel.sql.insert_linked), and the database's
ledger rules judge that statement as they judge separate ones."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any
from unittest.mock import patch

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models.signals import post_init

from brokerage import selectors, services
from brokerage.models import (
    ClientGroup,
    Deal,
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    Order,
    OrderStatus,
    Position,
    Posting,
    TradingAccount,
    TransactionKind,
)
from brokerage.services.ledger import house_account
from fix.models import FixSession
from kernel import sql
from marketdata.models import Instrument
from users.models import User

from .conftest import Market, ledger_problems, open_account, set_commission


def statements_of(run: Any) -> list[str]:
    seen: list[str] = []

    def wrapper(execute: Any, query: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(query)
        return execute(query, params, many, context)

    with connection.execute_wrapper(wrapper):
        run()
    return seen


def test_a_market_order_writes_its_rows_in_one_statement(
    alice: User, group: ClientGroup, instruments: dict[str, Instrument], market: Market
) -> None:
    set_commission(group, instruments["EURUSD"], "3")
    account = open_account(alice, group, balance="5000")
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(
        account=account, symbol="EURUSD", side="sell", volume=D("0.1")
    )  # and the house account
    orders: list[Order] = []
    seen = statements_of(
        lambda: orders.append(
            services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
        )
    )
    writes = [q for q in seen if not q.startswith(("SELECT", "SAVEPOINT", "RELEASE"))]
    assert len(writes) == 1 and writes[0].startswith("WITH")
    order = orders[0]
    deal = Deal.objects.get(order=order)
    position = Position.objects.get(pk=deal.position_id)
    txn = LedgerTransaction.objects.get(deal=deal)
    assert (order.pk, position.pk, deal.pk) == (deal.order_id, order.deals.get().position_id, txn.deal_id)
    assert (txn.kind, txn.order_id, txn.position_id) == (TransactionKind.COMMISSION, order.pk, position.pk)
    assert sorted(Posting.objects.filter(transaction=txn).values_list("amount", flat=True)) == [
        D("-0.30"),
        D("0.30"),
    ]
    assert position.commission == deal.commission == D("-0.30")
    account.refresh_from_db()
    assert account.balance == D("4999.40")
    assert ledger_problems() == []


def test_an_order_closing_a_position_writes_its_change_then_the_rest_in_one_statement(
    alice: User, netting_group: ClientGroup, instruments: dict[str, Instrument], market: Market
) -> None:
    """The position's conditional change, then the order, the deal, the realized P&L's and the
    commission's balanced ledger transactions and the client's balance in one statement. The house
    accounts they post to come with the account's lock."""
    set_commission(netting_group, instruments["EURUSD"], "3")
    account = open_account(alice, netting_group, balance="5000")
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.5"))  # at 1.1002
    services.position_close(
        position=Position.objects.get(account=account), volume=D("0.1")
    )  # a house P&L account
    market.set("EURUSD", "1.1050", "1.1052")
    selectors.open_positions(account=account)  # the process keeps the position's instrument, as a desk's does
    orders: list[Order] = []
    seen = statements_of(
        lambda: orders.append(
            services.order_submit(account=account, symbol="EURUSD", side="sell", volume=D("0.3"))
        )
    )
    statements = [q for q in seen if not q.startswith(("SAVEPOINT", "RELEASE"))]
    # The lock (with the house accounts), the open positions (netting), the change, the rest.
    assert [q.split()[0] for q in statements] == ["SELECT", "SELECT", "UPDATE", "WITH"]
    assert statements[2].startswith('UPDATE "brokerage_position"')
    order = orders[0]
    deal = Deal.objects.get(order=order)
    position = Position.objects.get(account=account)
    assert (deal.position_id, deal.entry, deal.volume) == (position.pk, "out", D("0.3"))
    assert deal.price == D("1.1050")
    assert deal.realized_pnl == D("144.00") and deal.commission == D("-0.90")  # (1.1050 - 1.1002) x 30,000
    txns = {t.kind: t for t in LedgerTransaction.objects.filter(deal=deal)}
    assert set(txns) == {TransactionKind.REALIZED_PNL, TransactionKind.COMMISSION}
    for txn in txns.values():
        assert (txn.order_id, txn.position_id) == (order.pk, position.pk)
    amounts = sorted(Posting.objects.filter(transaction__deal=deal).values_list("amount", flat=True))
    assert amounts == [D("-144.00"), D("-0.90"), D("0.90"), D("144.00")]
    assert (position.volume, position.status) == (D("0.1"), "open")
    assert position.commission == D("-1.50") - D("0.30") - D("0.90")  # its opening, first close, this one
    account.refresh_from_db()
    assert account.balance == D("5000") - D("1.50") - D("0.30") + D("-2.00") + D("144.00") - D("0.90")
    assert ledger_problems() == []


def test_the_ledger_rules_refuse_an_unbalanced_linked_write(account: TradingAccount) -> None:
    house = house_account(kind=LedgerAccountKind.REVENUE, currency="USD")
    txn = LedgerTransaction(kind=TransactionKind.COMMISSION, currency="USD")
    postings = [
        Posting(ledger_account_id=account.ledger_account.pk, amount=D("-1.00")),
        Posting(ledger_account_id=house.pk, amount=D("0.99")),
    ]
    with pytest.raises(DatabaseError, match="does not balance"), transaction.atomic():
        sql.insert_linked(
            [([txn], {}), (postings, {"transaction": 0})],
            [(TradingAccount, account.pk, {"balance": D("-1.00")})],
        )
        assert postings[0].transaction_id == txn.pk and postings[0].pk < postings[1].pk
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    account.refresh_from_db()
    assert account.balance == D("5000")


def bound(order: Order, bind: Any) -> list[tuple[type, Any]]:
    """What an INSERT of `order` binds (each value with its type), or the error it raises."""
    try:
        return [(type(v), v) for v in bind(order)]
    except Exception as exc:  # the same refusal either way
        return [(type(exc), None)]


@pytest.mark.filterwarnings("ignore:DateTimeField Order.created_at received a naive datetime")
def test_inserts_bind_what_django_binds(account: TradingAccount, instruments: dict[str, Instrument]) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    eurusd = instruments["EURUSD"]
    orders = [
        Order(
            account=account,
            instrument=eurusd,
            type="market",
            side="buy",
            volume=D("0.10"),
            sl=D("1.05"),
            status=OrderStatus.FILLED,
            filled_at=now,
            created_at=now,
        ),
        # Values Django converts or refuses: a string amount, a naive time, a non-finite Decimal.
        Order(account_id=account.pk, instrument=eurusd, volume="0.2", created_at=now.replace(tzinfo=None)),
        Order(account=account, instrument=eurusd, volume=D("NaN"), created_at=now),
    ]
    _, savers, _ = sql._insert_plan(Order, 1)

    def fast(order: Order) -> list[Any]:
        params: list[Any] = []
        sql._save_params(order, savers, connection, params)
        return params

    def django(order: Order) -> list[Any]:
        return [f.get_db_prep_save(f.pre_save(order, True), connection) for f, _, _ in savers]

    with patch("django.utils.timezone.now", return_value=now):  # updated_at (auto_now)
        for order in orders:
            assert bound(order, fast) == bound(order, django)
        assert [bound(order, django)[-1][0] for order in orders] == [datetime, datetime, ValidationError]


def test_new_builds_what_the_constructor_builds(
    account: TradingAccount, instruments: dict[str, Instrument]
) -> None:
    eurusd = instruments["EURUSD"]
    given: dict[str, Any] = {"instrument": eurusd, "type": "market", "side": "buy", "volume": D("0.10")}
    for values in ({"account": account, "position": None}, {"account_id": account.pk}):
        built, expected = sql.new(Order, **values, **given), Order(**values, **given)
        assert built.created_at - expected.created_at < timedelta(seconds=1)  # the default, called
        built.created_at = expected.created_at
        assert [getattr(built, a) for a in sql._attnames(Order)] == [
            getattr(expected, a) for a in sql._attnames(Order)
        ]
        assert built._state.adding and built.pk is None
        assert built.instrument is eurusd  # cached as the descriptor caches it: no query
        assert ("account" in built._state.fields_cache) == ("account" in values)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        sql.new(Order, colour="red")
    other = TradingAccount(pk=account.pk + 1000, currency="USD")
    ledger = sql.new(LedgerAccount, trading_account=other, kind=LedgerAccountKind.CLIENT, currency="USD")
    assert ledger.trading_account_id == other.pk
    assert other.ledger_account is ledger  # a one-to-one: its other side cached too, as assignment does


def test_new_and_build_keep_init_receivers_and_a_model_s_own_from_db(account: TradingAccount) -> None:
    seen: list[Order] = []

    def receiver(sender: type, instance: Order, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(receiver, sender=Order)
    try:
        order = sql.new(Order, account=account, volume=D("1"))
    finally:
        post_init.disconnect(receiver, sender=Order)
    assert seen == [order]
    assert sql._reads_itself(FixSession) and not sql._reads_itself(Order)
