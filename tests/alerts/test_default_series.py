"""A user's default symbols and timeframes are kept per process for the signals grid; a committed
change of them, made in any process, holds from the next request."""

from collections.abc import Callable

import pytest

from alerts import selectors
from alerts.models import AlertPreferences
from alerts.selectors import ALERT_PREFERENCES_VERSION, default_series
from alerts.services import user_preferences_update
from kernel import versions
from marketdata.models import Instrument
from tests.alerts.signal_data import seed_signals
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def analyst() -> User:
    seed_signals()
    return User.objects.create_user("analyst")


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    load: Callable[[int], object] = selectors._default_series.compute
    monkeypatch.setattr(selectors._default_series, "compute", lambda pk: calls.append(pk) or load(pk))
    return calls


def test_the_defaults_are_read_once_per_version(analyst: User, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    assert [default_series(user_id=analyst.pk) for _ in range(3)] == [([], [])] * 3
    assert calls == [analyst.pk]


def test_a_change_holds_from_the_next_read(analyst: User) -> None:
    assert default_series(user_id=analyst.pk) == ([], [])
    user_preferences_update(
        user=analyst, default_symbols=["EURUSD", "ETHUSD"], default_timeframes=["4h", "1h"]
    )
    assert default_series(user_id=analyst.pk) == (["ETHUSD", "EURUSD"], ["1h", "4h"])
    user_preferences_update(user=analyst, default_symbols=["GBPUSD"])
    assert default_series(user_id=analyst.pk) == (["GBPUSD"], ["1h", "4h"])
    AlertPreferences.objects.get(user=analyst).default_symbols.clear()
    assert default_series(user_id=analyst.pk) == ([], ["1h", "4h"])
    AlertPreferences.objects.filter(user=analyst).delete()
    assert default_series(user_id=analyst.pk) == ([], [])


def test_a_change_made_by_another_process_holds_once_its_version_moves(analyst: User) -> None:
    user_preferences_update(user=analyst, default_timeframes=["1h"])
    assert default_series(user_id=analyst.pk) == ([], ["1h"])
    # Another process's write: this one's signals are not sent; only the version in Redis tells.
    before = versions.read((ALERT_PREFERENCES_VERSION,))
    AlertPreferences.objects.filter(user=analyst).update(default_timeframes=["1d"])
    AlertPreferences.default_symbols.through.objects.bulk_create(
        [
            AlertPreferences.default_symbols.through(
                alertpreferences_id=analyst.pk, instrument=Instrument.objects.get(symbol="EURUSD")
            )
        ]
    )
    assert default_series(user_id=analyst.pk) == ([], ["1h"])  # kept: the version stands
    versions.bump_on_commit(ALERT_PREFERENCES_VERSION)  # what the other process's commit does
    assert versions.read((ALERT_PREFERENCES_VERSION,)) not in (None, before)
    assert default_series(user_id=analyst.pk) == (["EURUSD"], ["1d"])


def test_a_disabled_default_symbol_is_left_out_without_a_preferences_change(analyst: User) -> None:
    user_preferences_update(user=analyst, default_symbols=["EURUSD", "GBPUSD"])
    assert default_series(user_id=analyst.pk) == (["EURUSD", "GBPUSD"], [])
    Instrument.objects.get(symbol="GBPUSD").venue_symbols.update(enabled=False)
    from marketdata.selectors import MARKET_VERSION

    versions.bump_on_commit(MARKET_VERSION)  # as a venue symbol's change through the admin does
    assert default_series(user_id=analyst.pk) == (["EURUSD"], [])
