import re
from collections.abc import Iterator
from decimal import Decimal as D

import pytest
from django.test import Client
from django.urls import reverse

from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
from tests.fakes.binance import BinanceRestFake, binance_symbol
from tests.support.instruments import make_instrument
from tests.support.users import grant, make_staff
from users.models import AuditLog, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def binance_rest() -> Iterator[BinanceRestFake]:
    with BinanceRestFake() as fake:
        fake.symbols = [
            binance_symbol("BTCUSDT", "BTC", "USDT"),
            binance_symbol("ETHUSDT", "ETH", "USDT", tick_size="0.05000000", step_size="0.00010000"),
        ]
        yield fake


@pytest.fixture
def venue(binance_rest: BinanceRestFake) -> Venue:
    return Venue.objects.create(
        code="bn", name="Binance", kind=VenueKind.BINANCE, config={"rest_url": binance_rest.url}
    )


def staff(*permissions: str) -> Client:
    user = make_staff("desk", *(f"marketdata.{codename}" for codename in ["view_venue", *permissions]))
    client = Client()
    client.force_login(user)
    return client


def fingerprint(html: str) -> str:
    found = re.search(r'name="fingerprint" value="([0-9a-f]+)"', html)
    assert found, "the preview carries its fingerprint"
    return found.group(1)


def test_the_preview_shows_the_specs_and_creates_nothing(admin_client, venue):
    url = reverse("admin:marketdata_venue_catalogue", args=[venue.pk])
    assert admin_client.get(url).status_code == 200

    response = admin_client.post(url, {"match": "", "preview": "Preview"})

    html = response.content.decode()
    assert "2 to create, 0 to update, 0 unchanged, 0 skipped" in html
    assert (
        '<tr class="action-create"><td>create</td><td>ETHUSDT</td><td>ETHUSDT</td>\n'
        "      <td>0.05</td><td>2</td>\n"
        "      <td>0.00001</td><td>9000</td><td>0.0001</td>\n"
        "      <td>1</td><td>TRADING</td>"
    ) in html
    assert 'value="Import 2 new, 0 updated"' in html
    assert not Instrument.objects.exists() and not VenueSymbol.objects.exists()


def test_confirming_the_preview_imports_it_and_audits_the_operator(admin_client, venue):
    url = reverse("admin:marketdata_venue_catalogue", args=[venue.pk])
    preview = admin_client.post(url, {"match": "ETH*", "preview": "Preview"}).content.decode()

    response = admin_client.post(
        url,
        {"match": "ETH*", "watch": "on", "fingerprint": fingerprint(preview), "confirm": "Import"},
        follow=True,
    )

    assert "Imported from bn: 1 create, 0 update, 0 unchanged, 0 skipped." in response.content.decode()
    eth = Instrument.objects.get()
    assert (eth.symbol, eth.tick_size, eth.digits, eth.volume_step) == ("ETHUSDT", D("0.05"), 2, D("0.0001"))
    assert AuditLog.objects.get(action="venue.instruments_import").actor.username == "admin"
    assert dict(venue.symbols.values_list("venue_symbol", "enabled")) == {"ETHUSDT": True}  # watched


def test_a_confirmation_after_the_catalogue_changed_writes_nothing_and_shows_the_new_preview(
    admin_client, venue, binance_rest
):
    url = reverse("admin:marketdata_venue_catalogue", args=[venue.pk])
    preview = admin_client.post(url, {"match": "", "preview": "Preview"}).content.decode()
    binance_rest.symbols.append(binance_symbol("SOLUSDT", "SOL", "USDT"))

    response = admin_client.post(url, {"match": "", "fingerprint": fingerprint(preview), "confirm": "Import"})

    html = response.content.decode()
    assert "changed since the preview: nothing was written" in html
    assert "3 to create" in html and fingerprint(html) != fingerprint(preview)
    assert not Instrument.objects.exists()


def test_a_venue_error_or_malformed_catalogue_is_shown_and_cannot_be_confirmed(
    admin_client, venue, binance_rest
):
    url = reverse("admin:marketdata_venue_catalogue", args=[venue.pk])
    binance_rest.fail_next(1, 418, {"code": -1003, "msg": "Way too many requests; IP banned."})
    html = admin_client.post(url, {"match": "", "preview": "Preview"}).content.decode()
    assert "HTTP 418: Way too many requests; IP banned." in html

    binance_rest.symbols.append({"symbol": "BROKEN", "status": "TRADING"})
    html = admin_client.post(url, {"match": "", "preview": "Preview"}).content.decode()
    assert "1 malformed: nothing can be imported" in html and "BROKEN" in html
    assert 'name="confirm"' not in html
    html = admin_client.post(
        url, {"match": "", "fingerprint": fingerprint(html), "confirm": "Import"}
    ).content
    assert b"cannot be imported, nothing was written" in html
    assert not Instrument.objects.exists()


def test_the_import_action_leads_to_the_catalogue_page(admin_client, venue):
    response = admin_client.post(
        reverse("admin:marketdata_venue_changelist"),
        {"action": "import_instruments", "_selected_action": [venue.pk]},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:marketdata_venue_catalogue", args=[venue.pk])


def test_the_watchlist_page_adds_and_removes_symbols(admin_client, venue):
    for symbol in ("BTCUSDT", "ETHUSDT"):
        VenueSymbol.objects.create(
            venue=venue, instrument=make_instrument(symbol), venue_symbol=symbol, enabled=symbol == "BTCUSDT"
        )
    url = reverse("admin:marketdata_venue_watchlist", args=[venue.pk])

    response = admin_client.post(url, {"add": "ethusdt", "remove": "BTCUSDT"}, follow=True)

    html = response.content.decode()
    assert "Watchlist of bn: added ETHUSDT, removed BTCUSDT." in html
    assert "<tr><td>ETHUSDT</td><td>ETHUSDT</td><td>yes</td></tr>" in html
    assert dict(venue.symbols.values_list("venue_symbol", "enabled")) == {"BTCUSDT": False, "ETHUSDT": True}

    html = admin_client.post(url, {"add": "BTCUSDT, NOPE", "remove": ""}).content.decode()
    assert "Not mapped on bn: NOPE" in html
    assert dict(venue.symbols.values_list("venue_symbol", "enabled")) == {"BTCUSDT": False, "ETHUSDT": True}


def test_the_pages_need_their_permission(venue):
    catalogue = reverse("admin:marketdata_venue_catalogue", args=[venue.pk])
    watchlist = reverse("admin:marketdata_venue_watchlist", args=[venue.pk])
    client = staff()
    assert client.get(catalogue).status_code == 403
    assert client.post(watchlist, {"add": "BTCUSDT"}).status_code == 403
    changelist = client.get(reverse("admin:marketdata_venue_changelist")).content.decode()
    assert "import_instruments" not in changelist

    allowed = Client()
    allowed.force_login(User.objects.get(username="desk"))
    grant(User.objects.get(username="desk"), "marketdata.import_instruments", "marketdata.change_watchlist")
    assert allowed.get(catalogue).status_code == 200
    assert allowed.get(watchlist).status_code == 200
