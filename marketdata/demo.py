"""Seed data: the six instruments with real contract specifications (any deployment) and the
simulator venue quoting them (demo deployments only, see `seed`)."""

from decimal import Decimal as D

from django.db import transaction

from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol

INSTRUMENTS = [
    # symbol, description, base, quote, contract size, digits, pip,
    # volume min, max, step, margin rate, simulator start price, simulator spread
    (
        "EURUSD",
        "Euro vs US Dollar",
        "EUR",
        "USD",
        "100000",
        5,
        "0.0001",
        "0.01",
        "100",
        "0.01",
        "1",
        "1.08500",
        "0.00012",
    ),
    (
        "GBPUSD",
        "Pound Sterling vs US Dollar",
        "GBP",
        "USD",
        "100000",
        5,
        "0.0001",
        "0.01",
        "100",
        "0.01",
        "1",
        "1.27000",
        "0.00016",
    ),
    (
        "USDJPY",
        "US Dollar vs Japanese Yen",
        "USD",
        "JPY",
        "100000",
        3,
        "0.01",
        "0.01",
        "100",
        "0.01",
        "1",
        "150.000",
        "0.014",
    ),
    (
        "XAUUSD",
        "Gold vs US Dollar (100 oz)",
        "XAU",
        "USD",
        "100",
        2,
        "0.1",
        "0.01",
        "50",
        "0.01",
        "5",
        "2650.00",
        "0.30",
    ),
    (
        "BTCUSD",
        "Bitcoin vs US Dollar",
        "BTC",
        "USD",
        "1",
        2,
        "1",
        "0.01",
        "10",
        "0.01",
        "50",
        "95000.00",
        "12.00",
    ),
    (
        "ETHUSD",
        "Ether vs US Dollar",
        "ETH",
        "USD",
        "1",
        2,
        "0.1",
        "0.01",
        "100",
        "0.01",
        "50",
        "3400.00",
        "1.50",
    ),
]


@transaction.atomic
def instruments_seed() -> list[Instrument]:
    """Idempotent: the six instruments, created when missing; operator changes are left alone."""
    instruments = []
    for symbol, desc, base, quote, size, digits, pip, vmin, vmax, vstep, mrate, _, _ in INSTRUMENTS:
        instrument, _ = Instrument.objects.get_or_create(
            symbol=symbol,
            defaults={
                "description": desc,
                "base_currency": base,
                "quote_currency": quote,
                "contract_size": D(size),
                "digits": digits,
                "pip_size": D(pip),
                "volume_min": D(vmin),
                "volume_max": D(vmax),
                "volume_step": D(vstep),
                "margin_rate": D(mrate),
            },
        )
        instruments.append(instrument)
    return instruments


@transaction.atomic
def demo_seed() -> None:
    """Idempotent: the instruments and the simulator venue quoting them, created when missing;
    operator changes to existing rows are left alone."""
    sim, _ = Venue.objects.get_or_create(
        code="sim",
        defaults={
            "name": "Simulator",
            "kind": VenueKind.SIMULATOR,
            "priority": 10,
            "stale_after_ms": 2000,
            "config": {
                "seed": 1,
                "interval_ms": 250,
                "symbols": {row[0]: {"price": row[11], "spread": row[12]} for row in INSTRUMENTS},
            },
        },
    )
    for instrument in instruments_seed():
        VenueSymbol.objects.get_or_create(
            venue=sim, instrument=instrument, defaults={"venue_symbol": instrument.symbol}
        )
