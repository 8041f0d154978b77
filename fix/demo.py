"""Demo data for FIX: the LP simulator as a (demo) FIX venue, the session runfix opens to it and the
routing rule sending the demo A-Book group there. Seeded in demo deployments only (see `seed`)."""

import os
import secrets

from django.db import transaction

from brokerage.models import ClientGroup
from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol

from .models import FixRole, FixSession, RoutingAction, RoutingRule

SIM_PORT = 9878


@transaction.atomic
def fix_demo_seed() -> FixSession:
    """Idempotent. The simulator's password is generated here once and stored encrypted; runfix and
    `manage.py fix_lp_simulator` both read it from the row."""
    venue, _ = Venue.objects.get_or_create(
        code="lpfix",
        defaults={
            "name": "FIX LP (simulator)",
            "kind": VenueKind.FIX,
            "demo": True,  # the LP simulator's prices are simulated, whatever protocol carries them
            "priority": 20,
            "stale_after_ms": 3000,
        },
    )
    for instrument in Instrument.objects.all():
        base, quote = instrument.base_currency, instrument.quote_currency
        VenueSymbol.objects.get_or_create(
            venue=venue, instrument=instrument, defaults={"venue_symbol": f"{base}/{quote}"}
        )
    session = FixSession.objects.filter(name="lpsim").first()
    if session is None:
        session = FixSession.objects.create(
            name="lpsim",
            sender_comp_id="LIVERMORE",
            target_comp_id="LPSIM",
            host=os.environ.get("FIX_SIM_HOST", "127.0.0.1"),  # the simulator service under docker compose
            port=SIM_PORT,
            heartbeat_s=10,
            reconnect_s=5,
            role=FixRole.BOTH,
            venue=venue,
            username="livermore",
            password=secrets.token_urlsafe(24),
            account="LIVERMORE-HOUSE",
        )
    # Accounts of the demo A-Book group have their orders filled by the simulator; orders no rule
    # matches are internalised (B-Book).
    group, _ = ClientGroup.objects.get_or_create(
        name="demo-abook", defaults={"currency": "USD", "leverage": 100}
    )
    RoutingRule.objects.get_or_create(
        name="demo: A-Book group to the LP simulator",
        defaults={"priority": 1000, "group": group, "action": RoutingAction.A_BOOK, "session": session},
    )
    return session
