"""Rule evaluation on closed bars and live quotes: each firing stored once per (rule, bar, label), its
outbox rows queued in the same transaction, and the alert streamed after commit."""

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from alerts import rules
from alerts.models import (
    AlertEvent,
    AlertPayload,
    AlertRule,
    AlertSeriesState,
    Notification,
    NotificationChannel,
)
from alerts.selectors import (
    ALERT_RULES_VERSION,
    epoch_to_datetime,
    macdv_snapshot,
)
from alerts.streams import alerts_group
from kernel.versions import VersionedCache
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Candle
from marketdata.streams import stream_send_many

from .indicators import _decimal, bar_close_values, indicators_update_for_bar

log = logging.getLogger(__name__)


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


class _Book:
    """The active rules of one (symbol, timeframe) as this process last loaded them, compiled for bar
    closes, with their states as they were after evaluating the series' bar `evaluated_to`. They are
    current while the series row still shows that bar: bars of a series are evaluated one at a time
    under its row lock, so another process evaluating one (or a rollback) shows as a different bar.
    An edited, added or removed rule moves the alert rules version on, which retires the book."""

    def __init__(self, symbol: str, timeframe: str) -> None:
        self.symbol, self.timeframe = symbol, timeframe
        self.loaded = False
        self.evaluated_to: int | None = None
        self.index = rules.RuleIndex(())
        self.by_id: dict[int, rules.Rule] = {}
        self.owners: dict[int, tuple[int, int | None]] = {}

    def load(self, *, evaluated_to: int | None) -> None:
        rows = list(
            AlertRule.objects.filter(
                instrument__symbol=self.symbol, timeframe=self.timeframe, status=AlertRule.Status.ACTIVE
            )
        )
        self.index = rules.RuleIndex(r.to_rule(self.symbol) for r in rows)
        self.by_id = {r.id: r for r in self.index.rules}
        self.owners = {r.pk: (r.user_id, r.channel_id) for r in rows}
        self.loaded, self.evaluated_to = True, evaluated_to


# Compiling 10,000 rules costs more than evaluating them on a bar: each process keeps them.
_books: VersionedCache[tuple[str, str], _Book] = VersionedCache(
    (ALERT_RULES_VERSION,), lambda series: _Book(*series), size=1024
)


_RULE_STATES_SQL = (
    f"UPDATE {AlertRule._meta.db_table} AS r SET state = u.state, "  # noqa: S608 (the model's table)
    "status = COALESCE(u.status, r.status), last_fired_at = COALESCE(u.fired_at, r.last_fired_at) "
    "FROM unnest(%s::bigint[], %s::jsonb[], %s::varchar[], %s::timestamptz[]) "
    "AS u(id, state, status, fired_at) WHERE r.id = u.id"
)


def _rule_states_store(changes: Iterable[tuple[int, dict[str, Any], str | None, datetime | None]]) -> None:
    """Store evaluated rules' states, each with its new status and firing time where it has one
    (None keeps the stored one), in one statement joined to arrays. Django's bulk_update writes a
    CASE over every row for each column: PostgreSQL runs it for every row, so its cost grows with the
    square of the rows, about 0.5 s for the ~1,700 states a bar close of 10,000 rules changes, against
    about 50 ms here."""
    ids, states, statuses, fired = [], [], [], []
    for rule_id, state, status, fired_at in changes:
        ids.append(rule_id)
        states.append(json.dumps(state))
        statuses.append(None if status is None else str(status))  # a Status member: its value
        fired.append(fired_at)
    if ids:
        with connection.cursor() as cursor:
            cursor.execute(_RULE_STATES_SQL, [ids, states, statuses, fired])


def _evaluate_bar(
    row: AlertSeriesState, series: rules.SeriesState, *, start: int, values: Mapping[str, Any]
) -> list[AlertEvent]:
    """One bar of a series whose row lock the caller holds: expires rules, evaluates the active
    ones, stores the state of those that fired or changed and the advanced series, and records the
    firings."""
    symbol, timeframe = series.symbol, series.timeframe
    close_at = epoch_to_datetime(start + TIMEFRAME_SECONDS[timeframe])
    AlertRule.objects.filter(
        instrument__symbol=symbol,
        timeframe=timeframe,
        status=AlertRule.Status.ACTIVE,
        expires_at__lte=close_at,
    ).update(status=AlertRule.Status.EXPIRED)  # the evaluator skips them by their expiry alike
    book = _books.get((symbol, timeframe))
    if not book.loaded or book.evaluated_to != series.bar_start:
        book.load(evaluated_to=series.bar_start)
    book.loaded = False  # until the evaluation is done: one that raised may leave states half-changed
    touched: set[int] = set()
    firings = rules.evaluate_bar_close(
        book.index,
        series,
        bar_start=start,
        values=values,
        cooldown_s=settings.ALERTS_MACDV_COOLDOWN_S,
        touched=touched,
    )
    book.loaded, book.evaluated_to = True, start
    fired_ids = set(firings.rule_ids)
    triggered = AlertRule.Status.TRIGGERED
    _rule_states_store(
        (
            rule_id,
            (state := book.by_id[rule_id].state).to_json(),
            triggered if state.done else None,
            close_at if rule_id in fired_ids else None,
        )
        for rule_id in touched
    )
    row.bar_start = epoch_to_datetime(start)
    row.values = series.values_to_json()
    row.history = series.to_json()
    row.save(update_fields=["bar_start", "values", "history", "updated_at"])  # the firings' frames
    close = values.get(rules.CLOSE)
    price = _decimal(close) if close is not None else None
    return _events_record(firings.rows(), owners=book.owners, prices=dict.fromkeys(fired_ids, price))


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
            firing = firing._replace(stop=outcome is rules.Gate.STOP)
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
            accepted.append(rules.stop_notice(firing) if firing.stop else firing)
        _rule_states_store((r.pk, r.state, r.status, r.last_fired_at) for r in rows.values())
        return _events_record(
            accepted,
            owners={pk: (r.user_id, r.channel_id) for pk, r in rows.items()},
            prices={f.rule_id: price for f in accepted},
        )


# An event's fields in AlertEvent's order without the pk: the rows `_events_record` stores
_EVENT_FIELDS = [f for f in AlertEvent._meta.concrete_fields if not f.primary_key]
_PAYLOAD = _EVENT_FIELDS.index(AlertEvent._meta.get_field("payload"))
_EVENT_NAMES = [f.attname for f in AlertEvent._meta.concrete_fields]


# Each column's type without its modifier (varchar(20) -> varchar): an explicit cast to varchar(20)
# would cut a longer text silently; the insert's assignment refuses it, and rounds a numeric to the
# column's scale, as it does any value.
_EVENT_TYPES = [re.sub(r"[(].*[)]", "", cast(str, f.db_type(connection))) for f in _EVENT_FIELDS]
_EVENTS_INSERT = "INSERT INTO {} ({})".format(
    connection.ops.quote_name(AlertEvent._meta.db_table),
    ", ".join(connection.ops.quote_name(f.column) for f in _EVENT_FIELDS),
)
_EVENTS_CONFLICT = (
    "ON CONFLICT (rule_id, bar_start, label) DO NOTHING RETURNING id, rule_id, bar_start, label"
)


def _events_insert(rows: list[list[Any]]) -> dict[tuple[int, datetime, str], int]:
    """INSERT ... ON CONFLICT DO NOTHING of events given as their field values (`_EVENT_FIELDS`):
    the ids of the rows this call created by (rule id, bar start, label). Each value is bound as it
    is, which is what Django's conversion makes of them on PostgreSQL (ints, strings, aware datetimes,
    finite Decimals, None), but for the payload, bound as its JSON text.

    One statement whatever the number of rows, with few values to bind: a column whose values are
    all equal (a bar close's series, bar, price and firing time) is bound once; the others go as one
    array each, unnested in the order given, so the ids follow the rows' order; the payloads (events
    of one series share theirs) go once each, as an array the rows index. A VALUES list with a
    placeholder per value cost psycopg more to parse, each time anew, than the insert itself, and an
    array per column more to quote (the payload's JSON above all) than the rest of a bar close."""
    select: list[str] = []
    unnested: list[str] = []
    names: list[str] = []  # of the unnested columns
    selected: list[Any] = []  # the values bound in the select list, in its order
    arrays: list[list[Any]] = []  # then those of the unnested columns
    for i, name in enumerate(_EVENT_TYPES):
        column = [row[i] for row in rows]
        if i == _PAYLOAD:
            texts: dict[int, tuple[int, str]] = {}  # by the payload's id: the rows hold it meanwhile
            for n, payload in enumerate(column):
                index = texts.get(id(payload))
                if index is None:
                    index = texts[id(payload)] = (len(texts) + 1, json.dumps(payload))
                column[n] = index[0]
            if len(texts) > 1:
                select.append(f"(%s::jsonb[])[u.c{i}]")
                selected.append([text for _, text in texts.values()])
                unnested.append("%s::int[]")
                names.append(f"c{i}")
                arrays.append(column)
                continue
            column = [text for _, text in texts.values()]
        first = column[0]
        if all(value == first for value in column):
            select.append(f"%s::{name}")
            selected.append(first)
        else:
            select.append(f"u.c{i}")
            unnested.append(f"%s::{name}[]")
            names.append(f"c{i}")
            arrays.append(column)
    source = f"FROM unnest({', '.join(unnested)}) AS u({', '.join(names)})" if unnested else ""
    sql = f"{_EVENTS_INSERT} SELECT {', '.join(select)} {source} {_EVENTS_CONFLICT}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*selected, *arrays])
        return {(rule_id, bar, label): pk for pk, rule_id, bar, label in cursor.fetchall()}


def _events_record(
    firings: Iterable[rules.FiringRow],
    *,
    owners: Mapping[int, tuple[int, int | None]],
    prices: Mapping[int, Decimal | None],
) -> list[AlertEvent]:
    """Stores firings (each a `Firing`'s fields: a bar close's `Firings.rows()`, or `Firing`s) once
    each (rule, bar, label), queues one outbox row per channel the rule sends to (its own channel if it
    has one and it is enabled, else every enabled channel of its owner; `owners`: rule id -> (owner
    id, channel id)), and after commit enqueues delivery and publishes to the user's alerts stream."""
    now = timezone.now()
    snapshots: dict[str, dict[str, rules.MacdvFrame | None]] = {}
    # What firings share, made once: a bar close's firings are of one series, bar and a few values
    payloads: dict[tuple[str, str, bool], dict[str, Any]] = {}
    starts: dict[int, datetime] = {}
    decimals: dict[tuple[type, rules.Value], Decimal | None] = {}  # by type: 1.5 == Decimal("1.50")
    rows: list[list[Any]] = []  # in _EVENT_FIELDS order
    for rule_id, symbol, timeframe, bar_start, label, title, value, direction, _, _ in firings:
        key = (type(value), value)
        stored = decimals[key] if key in decimals else decimals.setdefault(key, _decimal(value))
        if stored is None:
            log.warning("alert %s of rule %s: value %r does not fit the history", label, rule_id, value)
            continue
        macdv = label.startswith("macdv")
        payload = payloads.get((symbol, timeframe, macdv))
        if payload is None:
            snapshot = snapshots.get(symbol)
            if snapshot is None:
                snapshot = snapshots[symbol] = macdv_snapshot(symbol=symbol)
            payload = payloads[symbol, timeframe, macdv] = {
                **rules.macdv_payload(snapshot, timeframe=timeframe),
                "value_name": "MACD-V" if macdv else "Value",
            }
        start = starts.get(bar_start)
        if start is None:
            start = starts[bar_start] = epoch_to_datetime(bar_start)
        rows.append(
            [
                rule_id,
                owners[rule_id][0],
                symbol,
                timeframe,
                start,
                label,
                title[:256],
                stored,
                prices.get(rule_id),
                direction.value,
                payload,
                now,
            ]
        )
    if not rows:
        return []
    created = _events_insert(rows)
    inserted = []
    for row in rows:
        pk = created.get((row[0], row[4], row[5]))
        if pk is not None:
            inserted.append(AlertEvent.from_db(connection.alias, _EVENT_NAMES, [pk, *row]))
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
            for channel_id in _targets(channels.get(event.user_id, []), owners[event.rule_id][1])
        ]
    )
    from alerts.tasks import notification_deliver

    for notification in notifications:
        notification_deliver.delay_on_commit(notification.pk)
    wire = [(e.user_id, e.to_wire()) for e in inserted]
    transaction.on_commit(lambda: _stream_publish(wire))
    log.info("alerts fired=%d notifications=%d", len(inserted), len(notifications))
    return inserted


def _targets(enabled: list[int], own: int | None) -> list[int]:
    """The channels of a rule's firing: its own if it has one (when enabled), else every enabled one."""
    if own is None:
        return enabled
    return [own] if own in enabled else []


def _stream_publish(wire: list[tuple[int, AlertPayload]]) -> None:
    try:
        stream_send_many((alerts_group(user_id), "alerts", "alert", data) for user_id, data in wire)
    except Exception:  # the stream is a live view; the history and the outbox already hold the alert
        log.exception("publishing %d alerts to the stream failed", len(wire))
