import io
import secrets
import subprocess
import sys
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from brokerage.models import ClientGroup
from fix.models import FixSession, RoutingRule
from marketdata.models import Instrument, Venue, VenueSymbol
from tests.support.stack import ROOT, production_env


def counts() -> tuple[int, ...]:
    return (
        Instrument.objects.count(),
        Venue.objects.count(),
        VenueSymbol.objects.count(),
        PeriodicTask.objects.count(),
        get_user_model().objects.count(),
    )


@pytest.mark.django_db
def test_seed_is_idempotent_and_keeps_operator_changes(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("seed")
    first = counts()
    Instrument.objects.filter(symbol="EURUSD").update(tradable=False)
    call_command("seed")
    assert counts() == first
    assert Instrument.objects.get(symbol="EURUSD").tradable is False


@pytest.mark.django_db
def test_seed_creates_the_six_instruments_with_real_contract_specs() -> None:
    call_command("seed")
    specs = {i.symbol: i for i in Instrument.objects.all()}
    assert set(specs) == {"EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD", "ETHUSD"}
    eurusd = specs["EURUSD"]
    assert (eurusd.contract_size, eurusd.digits, eurusd.pip_size) == (Decimal(100000), 5, Decimal("0.0001"))
    assert (eurusd.volume_min, eurusd.volume_max, eurusd.volume_step) == (
        Decimal("0.01"),
        Decimal(100),
        Decimal("0.01"),
    )
    assert (specs["USDJPY"].digits, specs["USDJPY"].pip_size) == (3, Decimal("0.01"))
    assert specs["XAUUSD"].contract_size == Decimal(100)
    assert Venue.objects.get(code="sim").enabled


@pytest.mark.django_db
def test_seed_prints_a_generated_operator_password_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "desk")
    call_command("seed")
    out = capsys.readouterr().out
    password = out.split("generated password: ")[1].split()[0]
    assert get_user_model().objects.get(username="desk").check_password(password)
    call_command("seed")
    assert "password" not in capsys.readouterr().out


@pytest.mark.django_db
def test_seed_takes_the_operator_password_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "desk")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "from the environment 42")
    call_command("seed")
    assert "from the environment 42" not in capsys.readouterr().out
    user = get_user_model().objects.get(username="desk")
    assert user.is_superuser and user.check_password("from the environment 42")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_seed_in_production_creates_no_demo_venue_session_or_routing_rule():
    result = subprocess.run(
        [sys.executable, "manage.py", "seed"],
        cwd=ROOT,
        env=production_env(
            DJANGO_SUPERUSER_USERNAME="operator", DJANGO_SUPERUSER_PASSWORD=secrets.token_urlsafe(18)
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no simulated venue, demo FIX LP session or demo routing rule seeded" in result.stdout
    assert Instrument.objects.count() == 6  # the contract specifications are not demo data
    assert not Venue.objects.exists()
    assert not VenueSymbol.objects.exists()
    assert not FixSession.objects.exists()
    assert not RoutingRule.objects.exists()
    assert not ClientGroup.objects.filter(name="demo-abook").exists()


@pytest.mark.django_db
def test_seed_in_a_demo_creates_the_simulated_venues_the_lp_session_and_its_routing_rule(settings):
    settings.LIVERMORE_DEMO = True
    call_command("seed", stdout=io.StringIO())
    call_command("seed", stdout=io.StringIO())  # idempotent
    venues = {v.code: v for v in Venue.objects.all()}
    assert set(venues) == {"sim", "lpfix"}
    assert venues["sim"].simulated and venues["lpfix"].simulated and venues["lpfix"].demo
    assert VenueSymbol.objects.filter(venue__code="sim").count() == 6
    assert FixSession.objects.get(name="lpsim").venue == venues["lpfix"]
    assert RoutingRule.objects.get().session.name == "lpsim"
