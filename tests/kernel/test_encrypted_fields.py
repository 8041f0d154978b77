import json

import pytest
from django.db import connection

from marketdata.models import Venue, VenueKind


@pytest.mark.django_db
def test_it_stores_venue_credentials_encrypted_and_reads_them_back() -> None:
    secret = json.dumps({"api_key": "k-123", "api_secret": "s-456"})
    venue = Venue.objects.create(code="cb", name="Coinbase", kind=VenueKind.COINBASE, credentials=secret)
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM marketdata_venue WHERE id = %s", [venue.pk])
        stored = cursor.fetchone()[0]
    assert "s-456" not in stored
    assert stored.startswith("gAAAA")  # a Fernet token
    assert Venue.objects.get(pk=venue.pk).credentials == secret


@pytest.mark.django_db
def test_it_stores_empty_credentials_as_empty() -> None:
    venue = Venue.objects.create(code="sim2", name="Sim", kind=VenueKind.SIMULATOR)
    assert Venue.objects.get(pk=venue.pk).credentials == ""
