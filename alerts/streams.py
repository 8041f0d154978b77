"""The /ws/v1/stream channel `indicators:SYMBOL:TF`: indicator values on every closed bar."""

from typing import Any

from alerts.selectors import alert_events_recent, indicators_latest
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Instrument
from marketdata.streams import SYMBOL_RE


def indicator_group(symbol: str, timeframe: str) -> str:
    return f"indicators.{symbol}.{timeframe}"


def indicator_channel(symbol: str, timeframe: str) -> str:
    return f"indicators:{symbol}:{timeframe}"


class IndicatorsChannel:
    """indicators:SYMBOL:TF; the snapshot is the latest cached value of each indicator."""

    def group(self, user: Any, arg: str) -> str | None:
        symbol, _, timeframe = arg.partition(":")
        if (
            timeframe in TIMEFRAME_SECONDS
            and SYMBOL_RE.match(symbol)
            and Instrument.objects.filter(symbol=symbol).exists()
        ):
            return indicator_group(symbol, timeframe)
        return None

    def snapshot(self, user: Any, arg: str) -> Any:
        symbol, _, timeframe = arg.partition(":")
        return indicators_latest(symbol=symbol, timeframe=timeframe)


def alerts_group(user_id: int) -> str:
    return f"alerts.{user_id}"


class AlertsChannel:
    def group(self, user: Any, arg: str) -> str | None:
        return alerts_group(user.pk) if arg == "" else None

    def snapshot(self, user: Any, arg: str) -> Any:
        return [event.to_wire() for event in alert_events_recent(user=user, limit=20)]
