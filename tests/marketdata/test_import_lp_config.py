"""manage.py import_lp_config on a sample of the old broker's lp_config.json (legacy_data/)."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from marketdata.models import Venue, VenueKind, VenueSymbol
from tests.support.instruments import make_instrument

pytestmark = pytest.mark.django_db

FILE = Path(__file__).parent / "legacy_data" / "lp_config.json"


def run() -> str:
    out = StringIO()
    call_command("import_lp_config", str(FILE), stdout=out, stderr=StringIO())
    return out.getvalue()


def test_lps_become_disabled_venues_with_their_symbols_and_the_primary_first() -> None:
    make_instrument("EURUSD")
    btc = make_instrument("BTCUSD", digits=2)
    out = run()
    binance, oanda = Venue.objects.get(code="binance"), Venue.objects.get(code="oanda")
    assert (binance.kind, binance.enabled, oanda.kind, oanda.enabled) == (
        VenueKind.BINANCE,
        False,
        VenueKind.OANDA,
        False,
    )
    assert binance.priority < oanda.priority  # the old primary LP
    assert oanda.config == {"accountId": "101-001-1234567-001"}
    assert json.loads(oanda.credentials) == {"apiKey": "oanda-secret-key"}
    assert VenueSymbol.objects.get(venue=binance, instrument=btc).venue_symbol == "btcusdt"
    assert VenueSymbol.objects.get(venue=oanda).venue_symbol == "EUR_USD"
    assert "venues: 2 created (disabled), 0 already present, 1 refused" in out
    assert "binance: symbols that are not instruments, not mapped: ETHUSD" in out
    assert "error: flexy: type 'socket.io' is not a venue kind" in out
    assert "oanda-secret-key" not in out


def test_a_second_run_adds_nothing() -> None:
    run()
    assert "venues: 0 created (disabled), 2 already present, 1 refused" in run()
