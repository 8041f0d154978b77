import io
import secrets
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from alerts.demo import DEMO_ALERT
from alerts.models import AlertRule
from brokerage.models import (
    CashOperation,
    CashStatus,
    ClientGroup,
    Order,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
    TradingAccount,
)
from fix.models import FixSession, RoutingRule
from marketdata.models import Instrument, Venue, VenueSymbol
from tests.support.stack import ROOT, production_env
from users.models import User
from users.roles import ROLES

D = Decimal


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
    assert not ClientGroup.objects.filter(name__startswith="demo-").exists()
    assert not TradingAccount.objects.exists()
    assert not User.objects.filter(username__startswith="demo-").exists()


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
    assert RoutingRule.objects.get().session == FixSession.objects.get(name="lpsim")


@pytest.mark.django_db
def test_seed_in_development_sets_up_a_desk_at_work(settings: Any, admin_client: Client) -> None:
    settings.LIVERMORE_DEMO = True
    out = io.StringIO()
    call_command("seed", stdout=out)
    call_command("seed", stdout=io.StringIO())  # idempotent

    for role in ROLES:
        operator = User.objects.get(username=f"demo-{role.replace('_', '-')}")
        assert operator.is_staff and not operator.is_superuser
        assert list(operator.groups.values_list("name", flat=True)) == [role]
        password = out.getvalue().split(f"{operator.username!r} with generated password: ")[1].split()[0]
        assert operator.check_password(password)

    assert set(ClientGroup.objects.filter(name__startswith="demo-").values_list("name", flat=True)) == {
        "demo-abook",
        "demo-standard",
        "demo-pro",
    }
    accounts = {a.owner.username: a for a in TradingAccount.objects.select_related("owner")}
    assert set(accounts) == {"demo-alice", "demo-bob", "demo-carol"}
    assert not any(a.owner.has_usable_password() for a in accounts.values())
    # Funded through the cash services (balances less the commission-free spread: none is charged).
    assert [accounts[n].balance for n in ("demo-alice", "demo-bob", "demo-carol")] == [
        D("10000"),
        D("5000"),
        D("8500"),
    ]
    assert Position.objects.filter(status=PositionStatus.OPEN).count() == 5
    pending = Order.objects.get(status=OrderStatus.PENDING)
    assert (pending.account, pending.type, pending.created_by) == (
        accounts["demo-alice"],
        OrderType.LIMIT,
        User.objects.get(username="demo-dealer"),
    )
    waiting = CashOperation.objects.get(status=CashStatus.PENDING)
    assert (waiting.account, waiting.amount, waiting.created_by.username) == (
        accounts["demo-alice"],
        D("20000"),
        "demo-back-office",
    )
    assert AlertRule.objects.get(user__username="demo-alice").name == DEMO_ALERT

    exposure = admin_client.get(reverse("admin:brokerage_exposure"))
    assert exposure.status_code == 200
    assert {(row[0], row[1]) for row in exposure.context["table"].rows} == {
        ("demo-standard", "EURUSD"),
        ("demo-standard", "XAUUSD"),
        ("demo-standard", "BTCUSD"),
        ("demo-pro", "USDJPY"),
        ("demo-pro", "ETHUSD"),
    }
    watch = admin_client.get(reverse("admin:brokerage_margin_watch"))
    # Bob near 105 %, Alice near 130 % (gold's margin rate is 5): lowest level first.
    assert [row[0]["text"] for row in watch.context["table"].rows] == [
        str(accounts["demo-bob"]),
        str(accounts["demo-alice"]),
    ]
