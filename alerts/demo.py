"""Demo data for alerts (development and demo deployments only, see `seed`): a price alert."""

from decimal import Decimal

from marketdata.models import Instrument
from users.models import User

from . import rules
from .models import AlertRule
from .services import alert_rule_save

DEMO_ALERT = "demo: EURUSD crosses 1.0900"


def alerts_demo_seed(*, user: User) -> AlertRule:
    """Idempotent: `user`'s price alert on EURUSD, created when missing."""
    existing = AlertRule.objects.filter(user=user, name=DEMO_ALERT).first()
    if existing is not None:
        return existing
    return alert_rule_save(
        rule=AlertRule(
            user=user,
            name=DEMO_ALERT,
            instrument=Instrument.objects.get(symbol="EURUSD"),
            timeframe="1m",
            kind=rules.Kind.CONDITION,
            source=rules.PRICE,
            condition=rules.Condition.CROSSING,
            threshold=Decimal("1.0900"),
            frequency=rules.Frequency.ONCE,
        )
    )
