from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from brokerage import pricing, services
from brokerage.models import GroupInstrument, LedgerTransaction, Position, TransactionKind
from livermore.schedules import periodic_tasks_sync
from tests.support.trading import open_account

from .conftest import ledger_problems

pytestmark = pytest.mark.django_db

MONDAY = date(2026, 11, 16)


def day(offset: int) -> date:
    return MONDAY + timedelta(days=offset)


def opened(account, market, side: str, volume: str, at: datetime) -> Position:
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side=side, volume=D(volume))
    position = Position.objects.get(account=account, side=side)
    Position.objects.filter(pk=position.pk).update(opened_at=at)
    return position


def test_swaps_are_charged_once_per_rollover_with_the_weekend_on_wednesday(
    account, group, instruments, market
):
    GroupInstrument.objects.create(
        group=group, instrument=instruments["EURUSD"], swap_long=D("-5"), swap_short=D("1.5")
    )
    opened(account, market, "buy", "2", datetime(2026, 11, 16, 10, tzinfo=UTC))
    opened(account, market, "sell", "1", datetime(2026, 11, 16, 10, tzinfo=UTC))
    assert services.swaps_accrue(day=day(0)) == 2  # Monday's rollover
    assert services.swaps_accrue(day=day(0)) == 0  # exactly once
    assert {p.side: p.swap for p in Position.objects.all()} == {"buy": D("-10"), "sell": D("1.5")}
    assert services.swaps_accrue(day=day(2)) == 2  # Tuesday once, Wednesday three times
    assert Position.objects.get(side="buy").swap == D("-50")
    assert services.swaps_accrue(day=day(6)) == 2  # Thursday, Friday; Saturday and Sunday none
    assert Position.objects.get(side="buy").swap == D("-70")  # 7 days for the week
    assert services.swaps_accrue(day=day(6)) == 0
    account.refresh_from_db()
    assert account.balance == D("5000") - D("70") + D("10.5")
    assert LedgerTransaction.objects.filter(kind=TransactionKind.SWAP).count() == 6


def test_a_position_opened_after_the_rollover_pays_nothing_for_it(account, group, instruments, market):
    GroupInstrument.objects.create(group=group, instrument=instruments["EURUSD"], swap_long=D("-5"))
    opened(account, market, "buy", "1", datetime(2026, 11, 16, 21, 30, tzinfo=UTC))
    assert services.swaps_accrue(day=day(0)) == 0
    assert services.swaps_accrue(day=day(1)) == 1
    assert Position.objects.get().swap == D("-5")


def test_markets_open_every_day_pay_one_day_per_rollover(account, group, instruments, market):
    GroupInstrument.objects.create(
        group=group, instrument=instruments["EURUSD"], swap_long=D("-1"), swap_triple_weekday=None
    )
    opened(account, market, "buy", "1", datetime(2026, 11, 16, 10, tzinfo=UTC))
    services.swaps_accrue(day=day(6))
    assert Position.objects.get().swap == D("-7")


def test_the_rollover_is_at_the_configured_hour() -> None:
    assert pricing.rollover_day(datetime(2026, 11, 18, 20, 59, tzinfo=UTC), 21) == date(2026, 11, 17)
    assert pricing.rollover_day(datetime(2026, 11, 18, 21, 0, tzinfo=UTC), 21) == date(2026, 11, 18)
    assert pricing.swap_days(day(0), day(6), triple_weekday=2) == 7
    assert pricing.swap_days(day(5), day(6), triple_weekday=2) == 0


def test_the_swap_job_runs_daily_at_the_rollover_and_keeps_operator_edits() -> None:
    periodic_tasks_sync()
    task = PeriodicTask.objects.get(name="accrue swaps")
    assert task.interval is None and task.crontab is not None
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "21", "*")
    assert str(task.crontab.timezone) == "UTC"
    later, _ = CrontabSchedule.objects.get_or_create(minute="5", hour="21", timezone="UTC")
    PeriodicTask.objects.filter(pk=task.pk).update(crontab=later)
    periodic_tasks_sync()
    assert PeriodicTask.objects.get(name="accrue swaps").crontab == later


def held_over_the_last_two_rollovers(account, market, volume: str) -> tuple[Position, date]:
    """A position opened an hour before the rollover of the day before the last one, which the swap
    job has not charged yet (it runs just after each rollover): two rollovers due."""
    hour = settings.SWAP_ROLLOVER_HOUR_UTC
    last = pricing.rollover_day(timezone.now(), hour)
    at = pricing.rollover_at(last - timedelta(days=1), hour) - timedelta(hours=1)
    return opened(account, market, "buy", volume, at), last


def test_a_close_before_the_swap_job_pays_the_rollovers_it_was_held_over_on_the_volume_held(
    account, group, instruments, market
):
    GroupInstrument.objects.create(
        group=group, instrument=instruments["EURUSD"], swap_long=D("-1"), swap_triple_weekday=None
    )
    position, last = held_over_the_last_two_rollovers(account, market, "2")

    services.position_close(position=position, volume=D("0.5"))
    position.refresh_from_db()
    assert (position.swap, position.swap_through, position.volume) == (D("-4"), last, D("1.5"))  # 2 lots x 2
    assert services.swaps_accrue(day=last) == 0  # the job finds it charged
    services.position_close(position=position)
    position.refresh_from_db()
    assert (position.status, position.swap) == ("closed", D("-4"))
    swaps = LedgerTransaction.objects.filter(kind=TransactionKind.SWAP)
    assert swaps.count() == 1
    assert ledger_problems() == []


def test_a_netting_add_before_the_swap_job_pays_the_passed_rollovers_on_the_volume_before_it(
    alice, netting_group, instruments, market
):
    GroupInstrument.objects.create(
        group=netting_group, instrument=instruments["EURUSD"], swap_long=D("-1"), swap_triple_weekday=None
    )
    account = open_account(alice, netting_group)
    position, last = held_over_the_last_two_rollovers(account, market, "1")

    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("3"))
    position.refresh_from_db()
    assert (position.volume, position.swap, position.swap_through) == (D("4"), D("-2"), last)  # 1 lot x 2
    assert services.swaps_accrue(day=last) == 0
    assert ledger_problems() == []
