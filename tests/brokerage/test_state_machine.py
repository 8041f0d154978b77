"""Random deposits, withdrawals, orders, closes, stop-outs and price paths keep the ledger invariants."""

import time
from decimal import Decimal as D

import pytest
from django.db import connection
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from brokerage import services
from brokerage.models import ClientGroup, Deal, Position, Posting, TransactionKind
from brokerage.quotes import MemoryQuoteSource
from kernel.errors import ServiceError
from marketdata.quotes import Quote, SelectedQuote
from tests.support.users import make_client

from .conftest import ledger_problems

pytestmark = pytest.mark.django_db

START = {"EURUSD": D("1.10000"), "USDJPY": D("150.000")}
SPREAD = {"EURUSD": D("0.00020"), "USDJPY": D("0.020")}
PIP = {"EURUSD": D("0.0001"), "USDJPY": D("0.01")}
EXPECTED_ERRORS = {"insufficient_margin", "insufficient_free_margin", "position_not_open", "invalid_volume"}


class Dealing(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        owner = make_client(f"trader{time.monotonic_ns()}", password=None)
        group = ClientGroup.objects.get(name="machine")
        self.account = services.account_open(owner=owner, group=group)
        self.quotes = MemoryQuoteSource()
        self.mid = dict(START)
        self.seq = 0
        self.publish_all()

    def publish_all(self) -> None:
        for symbol in START:
            self.publish(symbol)

    def publish(self, symbol: str) -> None:
        self.seq += 1
        half = SPREAD[symbol] / 2
        now = time.time_ns()
        quote = Quote(symbol, "sim", self.mid[symbol] - half, self.mid[symbol] + half, now, now)
        self.quotes.update(SelectedQuote(symbol=symbol, seq=self.seq, quote=quote, tradable=True))

    @rule(cents=st.integers(min_value=1, max_value=500_000))
    def deposit(self, cents: int) -> None:
        services.account_deposit(account=self.account, amount=D(cents) / 100)

    @rule(cents=st.integers(min_value=1, max_value=500_000))
    def withdraw(self, cents: int) -> None:
        try:
            services.account_withdraw(account=self.account, amount=D(cents) / 100, quotes=self.quotes)
        except ServiceError as exc:
            assert exc.code in EXPECTED_ERRORS

    @rule(symbol=st.sampled_from(sorted(START)), pips=st.integers(min_value=-300, max_value=300))
    def move(self, symbol: str, pips: int) -> None:
        self.mid[symbol] = max(self.mid[symbol] + PIP[symbol] * pips, PIP[symbol] * 100)
        self.publish(symbol)

    @rule(
        symbol=st.sampled_from(sorted(START)),
        side=st.sampled_from(["buy", "sell"]),
        hundredths=st.integers(min_value=1, max_value=300),
    )
    def order(self, symbol: str, side: str, hundredths: int) -> None:
        try:
            services.order_submit(
                account=self.account, symbol=symbol, side=side, volume=D(hundredths) / 100, quotes=self.quotes
            )
        except ServiceError as exc:
            assert exc.code in EXPECTED_ERRORS

    @precondition(lambda self: Position.objects.filter(account=self.account, status="open").exists())
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        positions = list(Position.objects.filter(account=self.account, status="open").order_by("id"))
        position = data.draw(st.sampled_from(positions))
        steps = int(position.volume * 100)
        volume = D(data.draw(st.integers(min_value=1, max_value=steps))) / 100
        try:
            services.position_close(position=position, volume=volume, quotes=self.quotes)
        except ServiceError as exc:
            assert exc.code in EXPECTED_ERRORS

    @rule(which=st.sampled_from(["all", "winners", "losers"]))
    def close_bulk(self, which: str) -> None:
        services.positions_close_bulk(account=self.account, which=which, quotes=self.quotes)  # type: ignore[arg-type]

    @rule()
    def margin_check(self) -> None:
        services.account_margin_check(account_id=self.account.pk, quotes=self.quotes)

    @invariant()
    def ledger_is_consistent(self) -> None:
        self.publish_all()  # a live feed: quotes never go stale between steps
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred balance check, now
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        assert ledger_problems() == []

    @invariant()
    def realized_pnl_in_deals_matches_the_ledger(self) -> None:
        deals = Deal.objects.filter(account=self.account).aggregate(total=Sum("realized_pnl"))["total"] or 0
        posted = (
            Posting.objects.filter(
                ledger_account__trading_account=self.account,
                transaction__kind=TransactionKind.REALIZED_PNL,
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        assert deals == posted

    @invariant()
    def open_positions_hold_volume_and_margin(self) -> None:
        for position in Position.objects.filter(account=self.account):
            if position.status == "open":
                assert position.volume > 0 and position.margin > 0
            else:
                assert position.volume == 0 and position.margin == 0

    @invariant()
    def a_flat_protected_account_is_never_negative(self) -> None:
        self.account.refresh_from_db()
        if not Position.objects.filter(account=self.account, status="open").exists():
            assert self.account.balance >= 0


def test_random_dealing_keeps_the_ledger_invariants(instruments):
    ClientGroup.objects.create(name="machine", currency="USD", leverage=100)
    run_state_machine_as_test(
        Dealing,
        settings=settings(
            max_examples=10,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
