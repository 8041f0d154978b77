import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import cache
from typing import Any, cast

from django.db.models import QuerySet

from alerts import rules
from alerts.indicators import INDICATOR_NAMES, Diagnostics, macdv_stage
from alerts.models import (
    AlertEvent,
    AlertPreferences,
    AlertRule,
    AlertSeriesState,
    IndicatorValue,
    Notification,
    NotificationChannel,
)
from alerts.signal_grid import BARS_NEEDED, TIMEFRAMES, Frame, Signal, signals_from_frames
from kernel import sql
from kernel.redis import key, sync_client
from kernel.versions import VersionedCache
from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.models import Candle, Instrument, Venue, VenueSymbol
from marketdata.selectors import MARKET_VERSION, SYNTHETIC_AFTER_S, candle_page
from users.selectors import user_settings


def closed_bars(*, instrument: Instrument, timeframe: str, end: int, limit: int) -> list[Bar]:
    """The last `limit` bars up to and including the closed one starting at `end` (epoch seconds),
    gaps filled as the candle API fills them (none before the first stored bar)."""
    step = TIMEFRAME_SECONDS[timeframe]
    # The bar at `end` is closed, so every bar of the window is complete: `now` says so.
    bars, _ = candle_page(
        instrument=instrument,
        timeframe=timeframe,
        start=end - (limit - 1) * step,
        end=end + step,
        limit=limit,
        now=end + step + SYNTHETIC_AFTER_S,
    )
    return bars


def indicator_values(
    *,
    instrument: Instrument,
    timeframe: str,
    name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int,
) -> list[IndicatorValue]:
    """Stored values in time order: the latest `limit` of those in [start, end]."""
    rows = IndicatorValue.objects.filter(instrument=instrument, timeframe=timeframe)
    if name is not None:
        rows = rows.filter(name=name)
    if start is not None:
        rows = rows.filter(start__gte=start)
    if end is not None:
        rows = rows.filter(start__lte=end)
    return list(reversed(rows.order_by("-start", "name")[:limit]))


# The data version (kernel/versions.py) of stored indicator values.
INDICATORS_VERSION = "indicators"
# The data version of alert rule definitions: moved on by any save or delete of a rule
# (alerts/receivers.py). The bar-close path's own state writes (bulk updates) do not move it.
ALERT_RULES_VERSION = "alert_rules"


@cache
def _signal_frames_sql() -> str:
    """Per enabled instrument and timeframe, the latest stored MACD-V row and, where there is none,
    the latest BARS_NEEDED closed bars' count and span: one index probe each, in one statement
    (DISTINCT ON would read every stored MACD-V row of the table)."""
    t = sql.quote
    return (
        "SELECT i.symbol, tf.tf, iv.start, iv.value, iv.signal, iv.histogram,"  # noqa: S608
        " c.n, c.first_start, c.last_start"
        f" FROM {t(Instrument._meta.db_table)} i"
        " CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS tf(tf, ord)"
        " LEFT JOIN LATERAL ("
        f"  SELECT v.start, v.value, v.signal, v.histogram FROM {t(IndicatorValue._meta.db_table)} v"
        "   WHERE v.instrument_id = i.id AND v.timeframe = tf.tf AND v.name = 'macdv'"
        "   ORDER BY v.start DESC LIMIT 1"
        " ) iv ON true"
        " LEFT JOIN LATERAL ("
        "  SELECT count(*) AS n, min(b.start) AS first_start, max(b.start) AS last_start FROM ("
        f"   SELECT k.start FROM {t(Candle._meta.db_table)} k"
        "    WHERE iv.start IS NULL AND k.instrument_id = i.id AND k.timeframe = tf.tf"
        "    ORDER BY k.start DESC LIMIT %s"
        "  ) b"
        " ) c ON true"
        " WHERE EXISTS ("
        f"  SELECT 1 FROM {t(VenueSymbol._meta.db_table)} s"
        f"  JOIN {t(Venue._meta.db_table)} e ON e.id = s.venue_id"
        "   WHERE s.instrument_id = i.id AND s.enabled AND e.enabled"
        " )"
        " ORDER BY i.symbol, tf.ord"
    )


def signal_frames() -> list[Frame]:
    """What the signals grid is computed from, for every enabled instrument (those priced by an enabled
    symbol of an enabled venue), by symbol then timeframe (1m to 1d)."""
    rows = sql.execute(_signal_frames_sql(), [list(TIMEFRAMES), BARS_NEEDED]).fetchall()
    frames = []
    for symbol, timeframe, start, value, signal, histogram, n, first, last in rows:
        span = 0 if first is None else int((last - first).total_seconds()) // TIMEFRAME_SECONDS[timeframe] + 1
        frames.append(Frame(symbol, timeframe, start, value, signal, histogram, n, span))
    return frames


class UnknownSymbols(LookupError):
    def __init__(self, symbols: list[str]) -> None:
        super().__init__(f"Unknown or disabled instruments: {', '.join(symbols)}")
        self.symbols = symbols


# The whole grid, kept per process until a candle, indicator value, instrument or venue changes:
# one Redis round trip instead of the grid's query (measured: 5 ms of 16 under load).
SIGNAL_GRID_VERSIONS = (MARKET_VERSION, INDICATORS_VERSION)
_signal_grid: VersionedCache[None, list[Signal]] = VersionedCache(
    SIGNAL_GRID_VERSIONS, lambda _: signals_from_frames(signal_frames())
)


def signal_list(
    *,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str] | None = None,
    stages: Sequence[str] | None = None,
    biases: Sequence[str] | None = None,
) -> list[Signal]:
    """The MACD-V signal of every enabled instrument on each timeframe, filtered. The bias is always
    over the six timeframes, whichever are listed. Raises UnknownSymbols for named symbols that are
    not enabled instruments."""
    result = _signal_grid.get(None)
    if symbols is not None:
        found = {s.symbol for s in result}
        if missing := [s for s in symbols if s not in found]:
            raise UnknownSymbols(missing)
        wanted = set(symbols)
        result = [s for s in result if s.symbol in wanted]
    if timeframes is not None:
        result = [s for s in result if s.timeframe in timeframes]
    if stages is not None:
        result = [s for s in result if s.stage in stages]
    if biases is not None:
        result = [s for s in result if s.bias in biases]
    return result


def indicator_cache_key(symbol: str, timeframe: str, name: str) -> str:
    return key("ind", symbol, timeframe, name)


def indicators_latest(*, symbol: str, timeframe: str) -> dict[str, Any]:
    """The latest cached value of each indicator, by name (those with no cached value left out)."""
    raw = cast(
        list[bytes | None],
        sync_client().mget([indicator_cache_key(symbol, timeframe, n) for n in INDICATOR_NAMES]),
    )
    latest = {n: json.loads(r) for n, r in zip(INDICATOR_NAMES, raw) if r}
    if (reading := latest.get(rules.MACDV)) is not None:
        # Derived again from the cached values: a reading cached under older stage rules never shows.
        reading["stage"] = macdv_stage(_number(reading.get("value")), _number(reading.get("signal")))
        reading.setdefault("diagnostics", None)
    return latest


def epoch_to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def alert_rules_for_user(*, user: Any) -> QuerySet[AlertRule]:
    return AlertRule.objects.filter(user=user).select_related("instrument")


def notification_channels_for_user(*, user: Any) -> QuerySet[NotificationChannel]:
    return NotificationChannel.objects.filter(user=user)


def alert_events_for_user(*, user: Any) -> QuerySet[AlertEvent]:
    return AlertEvent.objects.filter(user=user)


def alert_events_recent(*, user: Any, limit: int = 20) -> list[AlertEvent]:
    return list(alert_events_for_user(user=user)[:limit])


def notifications_failed(*, limit: int = 20) -> QuerySet[Notification]:
    """Deliveries that gave up (the dead letters an operator retries), newest first."""
    return (
        Notification.objects.filter(status=Notification.Status.FAILED)
        .select_related("channel", "event", "system_notice")
        .order_by("-created_at")[:limit]
    )


def live_rules() -> dict[str, list[rules.Rule]]:
    """Active rules evaluated on quotes, per symbol, with their stored state."""
    by_symbol: dict[str, list[rules.Rule]] = {}
    rows = AlertRule.objects.active().filter(kind=rules.Kind.CONDITION, source=rules.PRICE, other="")
    for row in rows.select_related("instrument"):
        if row.live:
            by_symbol.setdefault(row.instrument.symbol, []).append(row.to_rule(row.instrument.symbol))
    return by_symbol


def _number(x: Any) -> float | None:
    return None if x is None else float(x)


def macdv_snapshot(*, symbol: str) -> dict[str, rules.MacdvFrame | None]:
    """Each timeframe's latest evaluated MACD-V, signal and diagnostics for the symbol, None where no
    bar of that timeframe was evaluated yet."""
    frames: dict[str, rules.MacdvFrame | None] = dict.fromkeys(rules.TIMEFRAME_WEIGHTS)
    for timeframe, values in AlertSeriesState.objects.filter(symbol=symbol).values_list(
        "timeframe", "values"
    ):
        if timeframe not in frames:
            continue
        n_eff, span = values.get(rules.MACDV_N_EFF), values.get(rules.MACDV_SPAN)
        frames[timeframe] = rules.MacdvFrame(
            value=_number(values.get(rules.MACDV)),
            signal=_number(values.get(rules.MACDV_SIGNAL)),
            diagnostics=Diagnostics(int(n_eff), int(span))
            if n_eff is not None and span is not None
            else None,
        )
    return frames


def macdv_frames(*, symbol: str) -> dict[str, tuple[float, float | None] | None]:
    """Each timeframe's latest evaluated (MACD-V, signal) for the symbol, None where unknown."""
    return {
        tf: (frame.value, frame.signal) if frame and frame.value is not None else None
        for tf, frame in macdv_snapshot(symbol=symbol).items()
    }


def chart_series(*, symbol: str, timeframe: str, until: int) -> tuple[list[int], dict[str, list[Any]]] | None:
    """The series history of bars starting at or before `until` (epoch s), or None if none is kept."""
    row = AlertSeriesState.objects.filter(symbol=symbol, timeframe=timeframe).first()
    if row is None:
        return None
    starts = [s for s in row.history.get("starts", []) if s <= until]
    if not starts:
        return None
    n = len(starts)
    return starts, {k: v[:n] for k, v in row.history.get("history", {}).items()}


@dataclass(frozen=True)
class Preferences:
    """A user's settings and alert preferences together, as GET /api/v1/me/settings shows them."""

    timezone: str
    default_symbols: list[str]
    default_timeframes: list[str]
    default_channel: int | None
    quiet_hours_start: time | None
    quiet_hours_end: time | None


def user_preferences(*, user_id: int) -> Preferences:
    """The user's settings (users.UserSettings) and alert preferences, the defaults where none are kept."""
    own = user_settings(user_id=user_id)
    row = AlertPreferences.objects.filter(user_id=user_id).first()
    return Preferences(
        timezone=own.timezone,
        default_symbols=sorted(row.default_symbols.values_list("symbol", flat=True)) if row else [],
        default_timeframes=list(row.default_timeframes) if row else [],
        default_channel=row.default_channel_id if row else None,
        quiet_hours_start=own.quiet_hours_start,
        quiet_hours_end=own.quiet_hours_end,
    )


def default_channel(*, user_id: int) -> NotificationChannel | None:
    """The channel a new rule made without one goes to: the user's default channel, if they set one."""
    row = AlertPreferences.objects.select_related("default_channel").filter(user_id=user_id).first()
    return row.default_channel if row else None


# The data version of every user's alert preferences: moved on by a save or delete of the row and by a
# change of its default symbols (alerts/receivers.py).
ALERT_PREFERENCES_VERSION = "alert_preferences"


def _default_series_load(user_id: int) -> tuple[frozenset[str], tuple[str, ...]]:
    row = AlertPreferences.objects.filter(user_id=user_id).first()
    if row is None:
        return frozenset(), ()
    return frozenset(row.default_symbols.values_list("symbol", flat=True)), tuple(row.default_timeframes)


# Every GET of the signals grid asks for its caller's defaults: kept per user and process under their
# version (one Redis round trip instead of a query), seeded when missing as the trading states are.
_default_series: VersionedCache[int, tuple[frozenset[str], tuple[str, ...]]] = VersionedCache(
    (ALERT_PREFERENCES_VERSION,), _default_series_load, size=10_000, seed=True
)


def default_series(*, user_id: int) -> tuple[list[str], list[str]]:
    """The user's default symbols (those that are enabled instruments) and timeframes."""
    symbols, timeframes = _default_series.get(user_id)
    enabled = {s.symbol for s in _signal_grid.get(None)} if symbols else set()
    return sorted(symbols & enabled), list(timeframes)
