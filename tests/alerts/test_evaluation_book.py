"""The compiled rules each process keeps for bar closes (alerts.services.evaluation): retired when a
rule is added, edited or deleted (the alert rules version), reloaded when another process evaluated
a bar of the series since, and their state stored as it fires."""

from decimal import Decimal
from typing import Any

import pytest

from alerts.models import AlertRule, AlertSeriesState
from alerts.services import alerts_evaluate_bar_close
from alerts.services.alert_rules import alert_rule_delete, alert_rule_save
from marketdata.models import Instrument
from users.models import User

from .conftest import BAR, bar_values

pytestmark = pytest.mark.django_db(transaction=True)  # the version moves on when a rule commits
M5 = 300


def above(user: User, instrument: Instrument, level: str, **kw: Any) -> AlertRule:
    """A bar-close rule: the close (or `source`) above a level, once per bar close unless told."""
    return AlertRule.objects.create(
        user=user,
        instrument=instrument,
        timeframe="5m",
        condition="greater_than",
        threshold=Decimal(level),
        **kw,
    )


def fired_on(bar: int, close: str = "95000") -> list[int]:
    events = alerts_evaluate_bar_close(
        symbol="BTCUSD", timeframe="5m", bar_start=BAR + bar * M5, values=bar_values(0.0, close=close)
    )
    return sorted(e.rule_id for e in events)


def test_a_rule_added_edited_or_deleted_between_bars_counts_from_the_next_bar(
    alice: User, btc: Instrument
) -> None:
    first = above(alice, btc, "90000")
    assert fired_on(0) == [first.pk]
    second = above(alice, btc, "91000")
    assert fired_on(1) == [first.pk, second.pk]
    second.threshold = Decimal("96000")
    alert_rule_save(rule=second, changed=["threshold"])
    assert fired_on(2) == [first.pk]
    alert_rule_delete(rule=first)
    assert fired_on(3, close="97000") == [second.pk]


def test_a_bar_evaluated_by_another_process_reloads_the_states(alice: User, btc: Instrument) -> None:
    once = above(alice, btc, "90000", source="ema26", frequency="once")
    every = above(alice, btc, "90000")
    assert fired_on(0) == [once.pk, every.pk]
    assert AlertRule.objects.get(pk=once.pk).status == AlertRule.Status.TRIGGERED
    # Another process evaluates bar 1 and writes the state (a bulk update: no version moves on).
    AlertRule.objects.filter(pk=every.pk).update(state={"last_bar": BAR + 2 * M5})
    AlertSeriesState.objects.filter(symbol="BTCUSD", timeframe="5m").update(
        bar_start=AlertSeriesState.objects.get(symbol="BTCUSD", timeframe="5m").bar_start.replace(minute=5)
    )
    assert fired_on(2) == []  # its state says it fired on bar 2 already
    assert fired_on(3) == [every.pk]


def test_what_fired_is_stored_with_its_state(alice: User, btc: Instrument) -> None:
    rule = above(alice, btc, "90000")
    assert fired_on(0) == [rule.pk]
    stored = AlertRule.objects.get(pk=rule.pk)
    assert stored.state["last_bar"] == BAR
    assert stored.last_fired_at is not None and stored.last_fired_at.timestamp() == BAR + M5
    assert stored.status == AlertRule.Status.ACTIVE
