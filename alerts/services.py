import ipaddress
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Context, Decimal
from typing import Any, TypedDict
from urllib.parse import urlsplit

import httpx
import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import status

from alerts import discord, rules
from alerts.charts import render_chart
from alerts.indicators import INDICATORS, NOT_ENOUGH_BARS, Diagnostics, DiagnosticsJson, History, macdv_stage
from alerts.models import (
    AlertEvent,
    AlertRule,
    AlertSeriesState,
    IndicatorValue,
    Notification,
    NotificationChannel,
)
from alerts.selectors import (
    INDICATORS_VERSION,
    chart_series,
    closed_bars,
    epoch_to_datetime,
    indicator_cache_key,
    macdv_snapshot,
)
from alerts.streams import alerts_group, indicator_channel, indicator_group
from kernel import versions
from kernel.errors import ServiceError
from kernel.redis import key, sync_client
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Candle, Instrument
from marketdata.streams import stream_send

log = logging.getLogger(__name__)

INDICATOR_CACHE_TTL = 24 * 3600
# Bars loaded to compute one bar: far more than any seed needs, so the seed's effect on the
# newest value is below 1e-15 (ATR26: (25/26)^975) and a value does not depend on the window.
INDICATOR_LOOKBACK = 1000
VALUE_QUANTUM = Decimal("1e-10")  # IndicatorValue and AlertEvent values keep 10 decimal places
DECIMAL_LIMIT = Decimal("1e20")  # and at most 20 integer digits
_DECIMALS = Context(prec=40)

# Sets the cached latest value unless the cache already holds a later bar (a late redelivery).
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['ts'] > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class IndicatorReading(TypedDict):
    symbol: str
    timeframe: str
    name: str
    start: str
    ts: int
    value: str | None
    signal: str | None
    histogram: str | None
    seeded: bool
    reason: str | None
    stage: str | None  # MACD-V only: its stage ("unknown" while unseeded)
    diagnostics: DiagnosticsJson | None  # MACD-V only: nEff, span, gap ratio, liquidity tier


def _decimal(value: Decimal | float) -> Decimal | None:
    """`value` as the value columns store it (a float exactly, then rounded to 10 places); None when
    it is not finite or does not fit."""
    d = Decimal(value)
    if not d.is_finite() or abs(d) >= DECIMAL_LIMIT:
        return None
    return d.quantize(VALUE_QUANTUM, context=_DECIMALS)


def _text(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


def indicators_update_for_bar(
    *, symbol: str, timeframe: str, start: int, lookback: int = INDICATOR_LOOKBACK
) -> dict[str, Any]:
    """Compute every indicator on the closed bar of `symbol`/`timeframe` starting at `start` (epoch
    seconds), store the values, cache the latest in Redis and publish them. Idempotent."""
    instrument = Instrument.objects.filter(symbol=symbol).first()
    if instrument is None:
        raise ServiceError(
            "unknown_symbol", f"Unknown symbol {symbol!r}.", status_code=status.HTTP_404_NOT_FOUND
        )
    if timeframe not in TIMEFRAME_SECONDS:
        raise ServiceError(
            "invalid_timeframe", f"Unknown timeframe {timeframe!r}.", status_code=status.HTTP_400_BAD_REQUEST
        )
    bar_start = epoch_to_datetime(start)
    bars = closed_bars(instrument=instrument, timeframe=timeframe, end=start, limit=lookback)
    if not bars or bars[-1].start != start or bars[-1].synthetic:
        raise ServiceError(
            "bar_not_closed",
            f"No closed {timeframe} bar of {symbol} starts at {bar_start.isoformat()}.",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    history = History(
        high=np.array([float(b.high) for b in bars]),
        low=np.array([float(b.low) for b in bars]),
        close=np.array([float(b.close) for b in bars]),
        synthetic=np.array([b.synthetic for b in bars], dtype=bool),
    )
    readings: dict[str, IndicatorReading] = {}
    rows = []
    for name, compute in INDICATORS.items():
        series = compute(history)
        value = _decimal(float(series.value[-1]))
        signal = _decimal(float(series.signal[-1])) if series.signal is not None else None
        histogram = _decimal(float(series.histogram[-1])) if series.histogram is not None else None
        diagnostics: Diagnostics | None = series.diagnostics
        if value is not None:
            rows.append(
                IndicatorValue(
                    instrument=instrument,
                    timeframe=timeframe,
                    start=bar_start,
                    name=name,
                    value=value,
                    signal=signal,
                    histogram=histogram,
                    n_eff=diagnostics.n_eff if diagnostics else None,
                    span=diagnostics.span if diagnostics else None,
                )
            )
        elif series.seeded:
            log.warning("%s %s %s %s out of range: %r", symbol, timeframe, name, start, series.value[-1])
        readings[name] = IndicatorReading(
            symbol=symbol,
            timeframe=timeframe,
            name=name,
            start=bar_start.isoformat(),
            ts=start,
            value=_text(value),
            signal=_text(signal),
            histogram=_text(histogram),
            seeded=value is not None,
            reason=None if value is not None else (series.reason or NOT_ENOUGH_BARS),
            # The stage of the stored (rounded) values, so a reader recomputing it from them agrees.
            stage=macdv_stage(_float(value), _float(signal)) if name == rules.MACDV else None,
            diagnostics=diagnostics.to_json() if diagnostics else None,
        )
    with transaction.atomic():
        IndicatorValue.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=("instrument", "timeframe", "start", "name"),
            update_fields=("value", "signal", "histogram", "n_eff", "span", "computed_at"),
        )
        versions.bump_on_commit(INDICATORS_VERSION)
    redis = sync_client()
    set_if_newer = redis.register_script(_SET_IF_NEWER)
    for name, reading in readings.items():
        set_if_newer(
            keys=[indicator_cache_key(symbol, timeframe, name)],
            args=[json.dumps(reading), start, INDICATOR_CACHE_TTL],
        )
    data = {"symbol": symbol, "timeframe": timeframe, "start": bar_start.isoformat(), "indicators": readings}
    stream_send(indicator_group(symbol, timeframe), indicator_channel(symbol, timeframe), "indicator", data)
    return data


def _float(d: Decimal | None) -> float | None:
    return None if d is None else float(d)


def bar_close_values(candle: Candle, readings: Mapping[str, IndicatorReading]) -> dict[str, Decimal]:
    """The keys rules read on a closed bar: its OHLCV and each seeded indicator, with `<name>_signal`
    and `<name>_histogram` where the indicator has them (`macdv`, `macdv_signal`, `macdv_histogram`).
    Also MACD-V's diagnostics (`macdv_n_eff`, `macdv_span`), kept with the series for the alerts'
    payload; no rule reads them."""
    values = {
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
    }
    for name, reading in readings.items():
        for suffix, text in (
            ("", reading["value"]),
            ("_signal", reading["signal"]),
            ("_histogram", reading["histogram"]),
        ):
            if text is not None:
                values[f"{name}{suffix}"] = Decimal(text)
        if (diagnostics := reading.get("diagnostics")) is not None:
            values[rules.MACDV_N_EFF] = Decimal(diagnostics["n_eff"])
            values[rules.MACDV_SPAN] = Decimal(diagnostics["span"])
    return values


def bar_close_handle(*, symbol: str, timeframe: str, start: int) -> list["AlertEvent"]:
    """The alerts path of one closed bar: compute and store its indicators, then evaluate the
    bar-close rules on them. Idempotent: a redelivered bar neither re-stores differently nor re-fires."""
    data = indicators_update_for_bar(symbol=symbol, timeframe=timeframe, start=start)
    candle = Candle.objects.get(
        instrument__symbol=symbol, timeframe=timeframe, start=epoch_to_datetime(start)
    )
    return alerts_evaluate_bar_close(
        symbol=symbol,
        timeframe=timeframe,
        bar_start=start,
        values=bar_close_values(candle, data["indicators"]),
    )


# Changing any of these makes a different rule: its remembered state starts afresh.
DEFINITION_FIELDS = frozenset(
    {
        "instrument",
        "timeframe",
        "kind",
        "source",
        "condition",
        "threshold",
        "upper",
        "other",
        "bars",
        "frequency",
    }
)


# -- rules and channels ------------------------------------------------------------------------------


def alert_rule_save(*, rule: AlertRule, changed: Iterable[str] = ()) -> AlertRule:
    """Creates a rule, or saves an edited one (its attributes already set; `changed` names them).
    A changed definition resets the rule's state; re-activating a triggered or expired rule too."""
    changed = set(changed)
    errors = rule.spec_errors()
    if rule.pk is None or "expires_at" in changed:
        expires_at = rule.expires_at.timestamp() if rule.expires_at else None
        errors |= rules.expiry_errors(expires_at=expires_at, now=time.time())
    if errors:
        raise ServiceError("invalid_rule", "The alert rule is not valid.", fields=errors, status_code=400)
    if rule.status not in (AlertRule.Status.ACTIVE, AlertRule.Status.PAUSED) and "status" in changed:
        raise ServiceError(
            "invalid_status",
            "A rule can only be set active or paused.",
            fields={"status": ["Must be active or paused."]},
            status_code=400,
        )
    if rule.pk is None:
        rule.save()
        return rule
    # Only the edited columns: the evaluators may be writing the state meanwhile.
    fields = changed | {"updated_at"}
    if changed & DEFINITION_FIELDS or "status" in changed:
        rule.state = {}
        fields.add("state")
    rule.save(update_fields=fields)
    return rule


def alert_rule_delete(*, rule: AlertRule) -> None:
    rule.delete()


def alert_rules_expire(*, now: datetime | None = None) -> int:
    """Marks active rules past their expiry expired (periodic). They stopped firing at their expiry
    already (the evaluators check it); this keeps the status their owners see true."""
    return AlertRule.objects.filter(
        status=AlertRule.Status.ACTIVE, expires_at__lte=now or timezone.now()
    ).update(status=AlertRule.Status.EXPIRED)


def webhook_url_check(url: str) -> None:
    """Only Discord's webhook endpoints (the hosts in ALERTS_WEBHOOK_HOSTS), over HTTPS; plain HTTP only
    to a loopback host (a local fake). Keeps the worker from being pointed at arbitrary hosts."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018  raises on a malformed port
    except ValueError:
        invalid = "Not a valid URL."
        raise ServiceError(
            "invalid_webhook_url", invalid, fields={"webhook_url": [invalid]}, status_code=400
        ) from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    problem = None
    if host not in settings.ALERTS_WEBHOOK_HOSTS:
        problem = "Must be a Discord webhook URL (https://discord.com/api/webhooks/...)."
    elif parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        problem = "Must use https."
    elif not parts.path.startswith("/api/") or "/webhooks/" not in parts.path:
        problem = "Must be a webhook URL: .../api/webhooks/{id}/{token}."
    if problem:
        raise ServiceError("invalid_webhook_url", problem, fields={"webhook_url": [problem]}, status_code=400)


def notification_channel_save(
    *, channel: NotificationChannel, webhook_url: str | None = None
) -> NotificationChannel:
    """Creates or updates a channel; a new webhook URL (validated) re-enables it."""
    if webhook_url is not None:
        webhook_url_check(webhook_url)
        channel.webhook_url = webhook_url.strip()
        channel.disabled_reason = ""
    elif channel.pk is None:
        raise ServiceError(
            "invalid",
            "A channel needs its webhook URL.",
            fields={"webhook_url": ["Required."]},
            status_code=400,
        )
    if channel.enabled:
        channel.disabled_reason = ""
    channel.save()
    return channel


def notification_channel_delete(*, channel: NotificationChannel) -> None:
    channel.delete()


def notification_channel_test(*, channel: NotificationChannel) -> str:
    """Sends a test message to the channel's webhook now, outside the outbox, so its owner sees the
    webhook works; returns Discord's message id. A webhook Discord refuses (401/403/404) disables
    the channel, as a refused delivery does; any other failure is reported and changes nothing."""
    webhook_url_check(channel.webhook_url)
    if (blocked := _blocked_for(channel.pk)) > 0:
        raise ServiceError(
            "rate_limited",
            f"Discord asked us to wait {blocked:.0f}s before posting to this channel again.",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        )
    embed = discord.test_embed(channel_name=channel.name, sent_at=timezone.now())
    with httpx.Client() as client:
        result = discord.webhook_post(
            client,
            channel.webhook_url,
            embed=embed,
            png=None,
            timeout_s=settings.ALERTS_DISCORD_TIMEOUT_S,
            log_ref=f"channel={channel.pk} test",
        )
    _posted(channel.pk, result)
    if result.ok:
        return result.message_id
    if result.status == 429:
        _block(None if result.is_global else channel.pk, result.retry_after or 1.0)
    _disable_if_rejected(channel, result)
    raise ServiceError(
        "test_message_failed",
        f"Discord did not take the test message: {result.error}",
        status_code=status.HTTP_502_BAD_GATEWAY,
    )


# -- evaluation ----------------------------------------------------------------------------------------


def _epoch(value: datetime | int) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


def alerts_evaluate_bar_close(
    *, symbol: str, timeframe: str, bar_start: datetime | int, values: Mapping[str, Any]
) -> list[AlertEvent]:
    """Evaluates the bar-close rules of (symbol, timeframe) on a closed bar and records what fired.

    `values`: the bar's close (and open/high/low/volume) and its indicator values, by key (`macdv`,
    `macdv_signal`, `macdv_histogram`, `ema12`, ...).

    Bars of a series are evaluated in order, one at a time: the series row lock serialises them
    across processes. With several workers bar N+1 can be handled before bar N; then the stored
    closed bars between the last evaluated one and this one are evaluated first, oldest first (at
    most the latest ALERTS_BAR_CATCHUP_MAX of them), so a crossing on bar N is not lost. A bar at or
    before the last evaluated one is a no-op: it was evaluated already, or caught up by a later bar,
    so redelivery is harmless. A series' first evaluated bar starts it: no history is replayed."""
    start = _epoch(bar_start)
    with transaction.atomic():
        AlertSeriesState.objects.bulk_create(
            [AlertSeriesState(symbol=symbol, timeframe=timeframe)], ignore_conflicts=True
        )
        row = AlertSeriesState.objects.select_for_update().get(symbol=symbol, timeframe=timeframe)
        series = row.to_state()
        if series.bar_start is not None and start <= series.bar_start:
            return []
        events = []
        if series.bar_start is not None:
            for candle in _bars_missed(
                symbol=symbol, timeframe=timeframe, after=series.bar_start, before=start
            ):
                missed = _epoch(candle.start)
                log.info("alerts %s %s: catching up bar %s before %s", symbol, timeframe, missed, start)
                readings = indicators_update_for_bar(symbol=symbol, timeframe=timeframe, start=missed)
                values_missed = bar_close_values(candle, readings["indicators"])
                events += _evaluate_bar(row, series, start=missed, values=values_missed)
        return events + _evaluate_bar(row, series, start=start, values=values)


def _bars_missed(*, symbol: str, timeframe: str, after: int, before: int) -> list[Candle]:
    """Stored closed bars strictly between two bar starts, oldest first (the latest few at most)."""
    candles = Candle.objects.filter(
        instrument__symbol=symbol,
        timeframe=timeframe,
        start__gt=epoch_to_datetime(after),
        start__lt=epoch_to_datetime(before),
    ).order_by("-start")[: settings.ALERTS_BAR_CATCHUP_MAX]
    return list(reversed(candles))


def _evaluate_bar(
    row: AlertSeriesState, series: rules.SeriesState, *, start: int, values: Mapping[str, Any]
) -> list[AlertEvent]:
    """One bar of a series whose row lock the caller holds: expires rules, evaluates the active
    ones, stores their state and the advanced series, and records the firings."""
    symbol, timeframe = series.symbol, series.timeframe
    close_at = epoch_to_datetime(start + TIMEFRAME_SECONDS[timeframe])
    AlertRule.objects.filter(
        instrument__symbol=symbol,
        timeframe=timeframe,
        status=AlertRule.Status.ACTIVE,
        expires_at__lte=close_at,
    ).update(status=AlertRule.Status.EXPIRED)
    rows = list(AlertRule.objects.active(now=close_at).filter(instrument__symbol=symbol, timeframe=timeframe))
    before = {r.pk: rules.RuleState.from_json(r.state) for r in rows}
    evaluated = [r.to_rule(symbol) for r in rows]
    firings = rules.evaluate_bar_close(
        evaluated, series, bar_start=start, values=values, cooldown_s=settings.ALERTS_MACDV_COOLDOWN_S
    )
    by_id = {r.pk: r for r in rows}
    fired_ids = {f.rule_id for f in firings}
    changed = []
    for rule in evaluated:
        if rule.state != before[rule.id]:
            stored = by_id[rule.id]
            stored.state = rule.state.to_json()
            if rule.state.done:
                stored.status = AlertRule.Status.TRIGGERED
            if rule.id in fired_ids:
                stored.last_fired_at = close_at
            changed.append(stored)
    AlertRule.objects.bulk_update(changed, ["state", "status", "last_fired_at"])
    row.bar_start = epoch_to_datetime(start)
    row.values = series.values_to_json()
    row.history = series.to_json()
    row.save(update_fields=["bar_start", "values", "history", "updated_at"])  # the firings' frames
    close = values.get(rules.CLOSE)
    price = _decimal(close) if close is not None else None
    return _events_record(
        firings, users={r.pk: r.user_id for r in rows}, prices=dict.fromkeys(fired_ids, price)
    )


def alerts_record_live_firings(*, firings: Sequence[rules.Firing], price: Decimal) -> list[AlertEvent]:
    """Records firings the quote listener decided in memory, after re-checking each rule under its row
    lock with the stored state (the listener's view may be stale: a "once" rule may have fired
    already elsewhere). The stored state decides the frequency and the flood stop: a firing the
    listener flagged as the one too many is recorded as a plain one if the stored state says so,
    and the other way round."""
    if not firings:
        return []
    with transaction.atomic():
        rows = {
            r.pk: r
            for r in AlertRule.objects.select_for_update()
            .filter(pk__in={f.rule_id for f in firings})
            .order_by("pk")
        }
        states: dict[int, rules.RuleState] = {}
        accepted = []
        for firing in firings:
            row = rows.get(firing.rule_id)
            if (
                row is None
                or row.status != AlertRule.Status.ACTIVE
                or (row.expires_at is not None and row.expires_at.timestamp() <= firing.ts)
            ):
                continue
            state = states.setdefault(row.pk, rules.RuleState.from_json(row.state))
            outcome = rules.gate(state, rules.Frequency(row.frequency), firing.bar_start, firing.ts)
            if outcome is rules.Gate.SKIP:
                continue
            firing = replace(firing, stop=outcome is rules.Gate.STOP)
            if firing.stop:
                row.status = AlertRule.Status.STOPPED
                log.warning(
                    "alert rule %s stopped: it would fire more than %d times in %ds",
                    row.pk,
                    rules.FLOOD_MAX,
                    rules.FLOOD_WINDOW_S,
                )
            elif state.done:
                row.status = AlertRule.Status.TRIGGERED
            row.state = state.to_json()
            row.last_fired_at = epoch_to_datetime(firing.ts)
            accepted.append(firing)
        AlertRule.objects.bulk_update(rows.values(), ["state", "status", "last_fired_at"])
        return _events_record(
            accepted,
            users={pk: r.user_id for pk, r in rows.items()},
            prices={f.rule_id: price for f in accepted},
        )


def _events_insert(events: list[AlertEvent]) -> list[AlertEvent]:
    """INSERT ... ON CONFLICT DO NOTHING: returns only the rows this call created, with their ids."""
    fields = [f for f in AlertEvent._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    # Identifiers come from the model and every value is a parameter.
    table, columns = quote(AlertEvent._meta.db_table), ", ".join(quote(f.column) for f in fields)
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(events))} "  # noqa: S608
        "ON CONFLICT (rule_id, bar_start, label) DO NOTHING RETURNING id, rule_id, bar_start, label"
    )
    params = [f.get_db_prep_save(getattr(e, f.attname), connection) for e in events for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        created = {(rule_id, bar, label): pk for pk, rule_id, bar, label in cursor.fetchall()}
    inserted = []
    for event in events:
        pk = created.get((event.rule_id, event.bar_start, event.label))
        if pk is not None:
            event.pk = pk
            inserted.append(event)
    return inserted


def _events_record(
    firings: Sequence[rules.Firing], *, users: Mapping[int, int], prices: Mapping[int, Decimal | None]
) -> list[AlertEvent]:
    """Stores firings once each (rule, bar, label), queues one outbox row per enabled channel of the
    rule's owner, and after commit enqueues delivery and publishes to the user's alerts stream. A
    firing that stopped its rule (the flood stop) is stored as the notice telling the owner so."""
    if not firings:
        return []
    firings = [rules.stop_notice(f) if f.stop else f for f in firings]
    now = timezone.now()
    snapshots: dict[str, dict[str, rules.MacdvFrame | None]] = {}
    events = []
    for firing in firings:
        value = _decimal(firing.value)
        if value is None:
            log.warning(
                "alert %s of rule %s: value %r does not fit the history",
                firing.label,
                firing.rule_id,
                firing.value,
            )
            continue
        snapshot = snapshots.get(firing.symbol)
        if snapshot is None:
            snapshot = snapshots[firing.symbol] = macdv_snapshot(symbol=firing.symbol)
        events.append(
            AlertEvent(
                rule_id=firing.rule_id,
                user_id=users[firing.rule_id],
                symbol=firing.symbol,
                timeframe=firing.timeframe,
                bar_start=epoch_to_datetime(firing.bar_start),
                label=firing.label,
                title=firing.title[:256],
                value=value,
                price=prices.get(firing.rule_id),
                direction=firing.direction.value,
                payload={
                    **rules.macdv_payload(snapshot, timeframe=firing.timeframe),
                    "value_name": "MACD-V" if firing.label.startswith("macdv") else "Value",
                },
                fired_at=now,
            )
        )
    inserted = _events_insert(events) if events else []
    if not inserted:
        return []
    channels: dict[int, list[int]] = {}
    for channel_id, user_id in NotificationChannel.objects.filter(
        user_id__in={e.user_id for e in inserted}, enabled=True
    ).values_list("pk", "user_id"):
        channels.setdefault(user_id, []).append(channel_id)
    notifications = Notification.objects.bulk_create(
        [
            Notification(event=event, channel_id=channel_id, next_attempt_at=now)
            for event in inserted
            for channel_id in channels.get(event.user_id, [])
        ]
    )
    from alerts.tasks import notification_deliver

    for notification in notifications:
        notification_deliver.delay_on_commit(notification.pk)
    wire = [(e.user_id, e.to_wire()) for e in inserted]
    transaction.on_commit(lambda: _stream_publish(wire))
    log.info("alerts fired=%d notifications=%d", len(inserted), len(notifications))
    return inserted


def _stream_publish(wire: list[tuple[int, dict[str, Any]]]) -> None:
    try:
        for user_id, data in wire:
            stream_send(alerts_group(user_id), "alerts", "alert", data)
    except Exception:  # the stream is a live view; the history and the outbox already hold the alert
        log.exception("publishing %d alerts to the stream failed", len(wire))


# -- delivery ------------------------------------------------------------------------------------------


# Discord bans the IP for a while after 10,000 invalid requests (401/403/429) in 10 minutes.
INVALID_WINDOW_S = 600
ATTEMPT_LOG_MAX = 50
DELIVERY_FIELDS = (
    "status",
    "attempts",
    "rate_limited",
    "next_attempt_at",
    "last_error",
    "sent_at",
    "message_id",
    "attempt_log",
)


def _blocked_key(channel_id: int | None) -> str:
    """Per channel (a webhook's bucket), or for all channels (Discord's global limit) when None."""
    return key("alerts", "discord-blocked", str(channel_id) if channel_id is not None else "global")


def _block(channel_id: int | None, seconds: float) -> None:
    sync_client().set(_blocked_key(channel_id), "1", px=max(1, int(seconds * 1000)))


def _blocked_for(channel_id: int) -> float:
    ttls = sync_client().pttl(_blocked_key(channel_id)), sync_client().pttl(_blocked_key(None))
    return max(0, *(int(t) for t in ttls)) / 1000  # type: ignore[arg-type]


def _invalid_request_counted() -> None:
    """Counts an invalid request in this 10-minute window (shared by every worker through Redis). When
    this window and the previous one together reach ALERTS_DISCORD_INVALID_LIMIT (below Discord's
    10,000; the two windows cover any 10 minutes Discord may count), every channel is held for 10
    minutes, long enough for those requests to leave any window Discord counts."""
    window = int(time.time() // INVALID_WINDOW_S)
    current = key("alerts", "discord-invalid", str(window))
    pipe = sync_client().pipeline()
    pipe.incr(current)
    pipe.expire(current, 2 * INVALID_WINDOW_S)
    pipe.get(key("alerts", "discord-invalid", str(window - 1)))
    count, _, previous = pipe.execute()
    total = int(count) + int(previous or 0)
    limit = settings.ALERTS_DISCORD_INVALID_LIMIT
    if total >= limit:
        _block(None, INVALID_WINDOW_S)
        log.error(
            "discord: %d invalid requests (401/403/429) in the last 10 minutes reached the limit of %d "
            "(Discord bans the IP at 10,000): holding every channel for %ds",
            total,
            limit,
            INVALID_WINDOW_S,
        )


def notification_chart(*, event: AlertEvent) -> bytes | None:
    """The event's chart PNG from the series the engine evaluated, or None (the alert goes without)."""
    try:
        series = chart_series(symbol=event.symbol, timeframe=event.timeframe, until=_epoch(event.bar_start))
        if series is None:
            return None
        starts, data = series
        return render_chart(event.title, data, starts=starts)
    except Exception:
        log.exception("chart for alert event %s failed; sending without it", event.pk)
        return None


def _fail(notification: Notification, error: str) -> None:
    notification.status = Notification.Status.FAILED
    notification.last_error = error
    notification.save(update_fields=DELIVERY_FIELDS)
    log.warning("notification=%s failed: %s", notification.pk, error)


def notification_deliver(*, notification_id: int) -> float | None:
    """Sends one outbox row to its Discord webhook. Returns the seconds after which to call again
    (rate limited, or a retryable failure), or None when the row is settled or not ours to send.

    The row stays locked (FOR UPDATE SKIP LOCKED) while it is sent, so two workers never send it;
    a worker that finds it locked or already settled does nothing.

    Delivery is at least once, and at most once in the common case. A row is marked sent only on
    Discord's 200 with the message (?wait=true), whose id is stored; after that it is never sent
    again. A request that got no answer (a timeout or a broken connection after the body left), or
    a worker that died after the POST but before its commit, leaves the outcome unknown: the message
    may have been posted. Discord's webhook API has no idempotency key and no way to look a message
    up but by its id, so the policy is to retry such a row within its attempt budget and accept a
    possible duplicate in the channel rather than risk losing the alert. Every request is recorded
    in the row's `attempt_log` (outcome "unknown" for no answer), so `maybe_duplicated` tells which
    sent rows may show twice. 429s count toward ALERTS_DELIVERY_MAX_RATE_LIMITED, other failures
    toward ALERTS_DELIVERY_MAX_ATTEMPTS; past either, the row is marked failed with the error."""
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event", "channel")
            .filter(pk=notification_id, status=Notification.Status.PENDING)
            .first()
        )
        if notification is None:
            return None
        now = timezone.now()
        wait = (notification.next_attempt_at - now).total_seconds()
        if wait > 0:
            return wait
        channel = notification.channel
        if not channel.enabled:
            _fail(notification, f"channel disabled: {channel.disabled_reason or 'by its owner'}")
            return None
        if (blocked := _blocked_for(channel.pk)) > 0:
            notification.next_attempt_at = now + timedelta(seconds=blocked)
            notification.save(update_fields=["next_attempt_at"])
            return blocked
        try:
            webhook_url_check(channel.webhook_url)
        except ServiceError as exc:
            _fail(notification, f"webhook URL rejected: {exc.message}")
            return None
        event = notification.event
        png = notification_chart(event=event)
        embed = discord.alert_embed(
            title=event.title,
            value=event.value,
            value_name=event.payload.get("value_name", "Value"),
            price=event.price,
            timeframe=event.timeframe,
            frames=event.payload.get("frames", {}),
            stages=event.payload.get("stages", {}),
            bias=event.payload.get("bias", rules.NEUTRAL),
            diagnostics=event.payload.get("diagnostics"),
            direction=event.direction,
            fired_at=event.fired_at,
            footer=f"Livermore alert #{event.pk}",
            with_chart=png is not None,
        )
        with httpx.Client() as client:
            result = discord.webhook_post(
                client,
                channel.webhook_url,
                embed=embed,
                png=png,
                timeout_s=settings.ALERTS_DISCORD_TIMEOUT_S,
                log_ref=f"channel={channel.pk} notification={notification.pk}",
            )
        _posted(channel.pk, result)
        return _settle(notification, result)


def _posted(channel_id: int, result: discord.WebhookResult) -> None:
    """What every answer to a POST tells about the channel's bucket and Discord's invalid-request count."""
    if result.blocked_for:
        _block(channel_id, result.blocked_for)
    if result.invalid:
        _invalid_request_counted()


def _disable_if_rejected(channel: NotificationChannel, result: discord.WebhookResult) -> bool:
    """A webhook Discord refuses (deleted, or its token revoked) disables the channel until its owner
    gives it a new URL: every later post would be refused too, and counted as invalid."""
    if result.status not in (401, 403, 404) and result.code != discord.UNKNOWN_WEBHOOK:
        return False
    channel.enabled = False
    channel.disabled_reason = f"webhook rejected: {result.error}"[:200]
    channel.save(update_fields=["enabled", "disabled_reason"])
    return True


def _attempt(result: discord.WebhookResult, at: datetime) -> dict[str, Any]:
    if result.ok:
        outcome = "posted"
    elif result.status == 0:
        outcome = "unknown"  # no answer: the message may have been posted
    elif result.status == 429:
        outcome = "rate_limited"
    else:
        outcome = "rejected"
    return {
        "at": at.isoformat(),
        "status": result.status,
        "outcome": outcome,
        "ms": round(result.elapsed_ms),
        "error": result.error,
        "message_id": result.message_id,
    }


def _settle(notification: Notification, result: discord.WebhookResult) -> float | None:
    now = timezone.now()
    notification.attempt_log = [*notification.attempt_log, _attempt(result, now)][-ATTEMPT_LOG_MAX:]
    if result.ok:
        notification.attempts += 1
        notification.status = Notification.Status.SENT
        notification.sent_at = now
        notification.message_id = result.message_id
        notification.last_error = ""
        notification.save(update_fields=DELIVERY_FIELDS)
        return None
    if result.status == 429:
        retry_after = result.retry_after or 1.0
        _block(None if result.is_global else notification.channel_id, retry_after)
        notification.rate_limited += 1
        if notification.rate_limited >= settings.ALERTS_DELIVERY_MAX_RATE_LIMITED:
            _fail(
                notification,
                f"gave up after {notification.rate_limited} rate-limited answers: {result.error}",
            )
            return None
        notification.next_attempt_at = now + timedelta(seconds=retry_after)
        notification.last_error = result.error
        notification.save(update_fields=DELIVERY_FIELDS)
        return retry_after
    notification.attempts += 1
    if _disable_if_rejected(notification.channel, result):
        _fail(notification, result.error)
        return None
    if result.status and result.status < 500:
        _fail(notification, result.error)
        return None
    if notification.attempts >= settings.ALERTS_DELIVERY_MAX_ATTEMPTS:
        _fail(notification, f"gave up after {notification.attempts} attempts: {result.error}")
        return None
    delay = min(
        settings.ALERTS_DELIVERY_BACKOFF_S * 2 ** (notification.attempts - 1),
        settings.ALERTS_DELIVERY_BACKOFF_MAX_S,
    )
    notification.next_attempt_at = now + timedelta(seconds=delay)
    notification.last_error = result.error
    notification.save(update_fields=DELIVERY_FIELDS)
    return delay


def notification_retry(*, notification: Notification) -> Notification:
    """Operator action: send a failed (or stuck) row again, with a fresh attempt budget."""
    if notification.status == Notification.Status.SENT:
        raise ServiceError("already_sent", f"Notification #{notification.pk} was already sent.")
    with transaction.atomic():
        notification.status = Notification.Status.PENDING
        notification.attempts = notification.rate_limited = 0
        notification.next_attempt_at = timezone.now()
        notification.save(update_fields=["status", "attempts", "rate_limited", "next_attempt_at"])
        from alerts.tasks import notification_deliver

        notification_deliver.delay_on_commit(notification.pk)
    return notification


def notifications_requeue_due(*, grace_s: float | None = None) -> int:
    """Re-enqueues pending rows whose delivery is overdue by more than ALERTS_REQUEUE_GRACE_S (a task
    lost with a broker or a worker killed mid-delivery: its row lock died with its connection).
    Extra deliveries of a row are harmless: the row lock and its status decide."""
    from alerts.tasks import notification_deliver

    if grace_s is None:
        grace_s = settings.ALERTS_REQUEUE_GRACE_S
    due = list(
        Notification.objects.filter(
            status=Notification.Status.PENDING,
            next_attempt_at__lte=timezone.now() - timedelta(seconds=grace_s),
        ).values_list("pk", flat=True)[:1000]
    )
    for pk in due:
        notification_deliver.delay(pk)
    return len(due)
