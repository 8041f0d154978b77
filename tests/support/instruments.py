"""Instruments for tests that need one outside the demo set (`marketdata.demo.demo_seed`)."""

from decimal import Decimal

from marketdata.models import Instrument


def make_instrument(symbol: str = "EURUSD", digits: int = 5) -> Instrument:
    """A currency-pair-shaped instrument: the symbol's halves as base and quote, a 100000 contract."""
    return Instrument.objects.create(
        symbol=symbol,
        base_currency=symbol[:3],
        quote_currency=symbol[3:],
        contract_size=Decimal(100000),
        digits=digits,
        pip_size=Decimal("0.0001"),
        volume_min=Decimal("0.01"),
        volume_max=Decimal(100),
        volume_step=Decimal("0.01"),
    )
