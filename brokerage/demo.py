"""Demo desk (development and demo deployments only, see `seed`): two client groups, client accounts
funded through the cash services, open positions and a pending order placed by a dealer, and a deposit
waiting for a second operator, so every console page and account stream shows something at first start."""

from dataclasses import dataclass
from decimal import Decimal as D

from django.db import transaction

from marketdata.demo import INSTRUMENTS
from users.models import User

from . import pricing
from .models import CashOperationKind, ClientGroup, OrderType, PaymentMethod, Reason, Side, TradingAccount
from .quotes import QuoteSource, redis_quotes
from .services import cash_operation_create, client_account_open, four_eyes_threshold, order_submit

GROUPS = (
    # name, currency, leverage
    ("demo-standard", "USD", 100),
    ("demo-pro", "USD", 200),
)


@dataclass(frozen=True)
class DemoClient:
    username: str
    group: str
    deposits: tuple[tuple[str, str, str], ...]  # method, amount, external reference
    positions: tuple[tuple[str, str, str], ...]  # symbol, side, volume


CLIENTS = (
    DemoClient(
        "demo-alice",
        "demo-standard",
        (("bank", "10000", "DEMO-BANK-1"),),
        (("EURUSD", Side.BUY, "1"), ("XAUUSD", Side.SELL, "0.5")),
    ),
    DemoClient(
        "demo-bob", "demo-standard", (("card", "5000", "DEMO-CARD-1"),), (("BTCUSD", Side.BUY, "0.1"),)
    ),
    DemoClient(
        "demo-carol",
        "demo-pro",
        (("crypto", "8000", "DEMO-CRYPTO-1"), ("bonus", "500", "DEMO-BONUS-1")),
        (("USDJPY", Side.SELL, "1"), ("ETHUSD", Side.BUY, "2")),
    ),
)


class StartQuotes:
    """The live selected quote when the market runs, else the simulator's start price and spread, so
    the demo desk can be seeded before the market process has published anything."""

    def __init__(self, live: QuoteSource = redis_quotes) -> None:
        self.live = live
        self.start = {row[0]: (D(row[11]), D(row[12])) for row in INSTRUMENTS}

    def tick(self, symbol: str) -> pricing.Tick | None:
        tick = self.live.tick(symbol)
        if tick is not None or symbol not in self.start:
            return tick
        price, spread = self.start[symbol]
        return pricing.Tick(bid=price - spread / 2, ask=price + spread / 2, venue="sim")

    def mid(self, symbol: str) -> D | None:
        tick = self.tick(symbol)
        return tick.mid if tick else None


@transaction.atomic
def brokerage_demo_seed(*, back_office: User, dealer: User) -> list[TradingAccount]:
    """Idempotent: does nothing once the demo groups exist (operator changes are left alone).
    Money moves through the cash services as `back_office`, trades through order_submit as `dealer`."""
    if ClientGroup.objects.filter(name__in=[name for name, _, _ in GROUPS]).exists():
        return []
    quotes = StartQuotes()
    groups = {
        name: ClientGroup.objects.create(name=name, currency=currency, leverage=leverage)
        for name, currency, leverage in GROUPS
    }
    accounts = []
    for client in CLIENTS:
        owner, created = User.objects.get_or_create(username=client.username)
        if created:
            owner.set_unusable_password()  # the back office sets one (reset-password) when needed
            owner.save(update_fields=["password"])
        account = client_account_open(owner=owner, group=groups[client.group], actor=back_office)
        for method, amount, reference in client.deposits:
            cash_operation_create(
                account=account,
                kind=CashOperationKind.BONUS if method == PaymentMethod.BONUS else CashOperationKind.DEPOSIT,
                amount=D(amount),
                method=method,
                external_ref=reference,
                comment="demo funding",
                actor=back_office,
                quotes=quotes,
            )
        for symbol, side, volume in client.positions:
            order_submit(
                account=account,
                symbol=symbol,
                side=side,
                volume=D(volume),
                reason=Reason.OPERATOR,
                actor=dealer,
                quotes=quotes,
            )
        accounts.append(account)
    alice = accounts[0]
    tick = quotes.tick("EURUSD")
    assert tick is not None
    limit = (tick.bid * D("0.995")).quantize(D("0.00001"))
    order_submit(
        account=alice,
        symbol="EURUSD",
        side=Side.BUY,
        volume=D("0.5"),
        type=OrderType.LIMIT,
        price=limit,
        tp=(limit * D("1.01")).quantize(D("0.00001")),
        reason=Reason.OPERATOR,
        actor=dealer,
        quotes=quotes,
    )
    # Above the four-eyes threshold: pending until a second back-office operator approves it.
    cash_operation_create(
        account=alice,
        kind=CashOperationKind.DEPOSIT,
        amount=four_eyes_threshold(alice.currency) * 2,
        method=PaymentMethod.BANK,
        external_ref="DEMO-BANK-2",
        comment="demo: waiting for a second operator",
        actor=back_office,
        quotes=quotes,
    )
    return accounts
