"""The alerts app's writes, split by concern: `indicators` (computed and stored on closed bars),
`alert_rules` (owners' rule changes), `evaluation` (rules on closed bars and live quotes, firings and
their outbox rows), `channels` (Discord webhooks), `delivery` (the outbox worker), `system` (system
events routed into the outbox), `preferences` (a user's settings and alert preferences). Callers
import from `alerts.services`."""

from .alert_rules import DEFINITION_FIELDS, alert_rule_delete, alert_rule_save, alert_rules_expire
from .channels import (
    INVALID_WINDOW_S,
    notification_channel_delete,
    notification_channel_save,
    notification_channel_test,
    webhook_url_check,
)
from .delivery import (
    ATTEMPT_LOG_MAX,
    DELIVERY_FIELDS,
    notification_chart,
    notification_deliver,
    notification_retry,
    notifications_requeue_due,
)
from .evaluation import alerts_evaluate_bar_close, alerts_record_live_firings, bar_close_handle
from .indicators import (
    DECIMAL_LIMIT,
    INDICATOR_CACHE_TTL,
    INDICATOR_LOOKBACK,
    VALUE_QUANTUM,
    IndicatorPayload,
    IndicatorReading,
    bar_close_values,
    indicators_update_for_bar,
)
from .preferences import user_preferences_update
from .system import NOTICE_ITEMS_MAX, dead_letters_check, system_event_record

__all__ = [
    "ATTEMPT_LOG_MAX",
    "DECIMAL_LIMIT",
    "DEFINITION_FIELDS",
    "DELIVERY_FIELDS",
    "INDICATOR_CACHE_TTL",
    "INDICATOR_LOOKBACK",
    "INVALID_WINDOW_S",
    "NOTICE_ITEMS_MAX",
    "VALUE_QUANTUM",
    "IndicatorPayload",
    "IndicatorReading",
    "alert_rule_delete",
    "alert_rule_save",
    "alert_rules_expire",
    "alerts_evaluate_bar_close",
    "alerts_record_live_firings",
    "bar_close_handle",
    "bar_close_values",
    "dead_letters_check",
    "indicators_update_for_bar",
    "notification_channel_delete",
    "notification_channel_save",
    "notification_channel_test",
    "notification_chart",
    "notification_deliver",
    "notification_retry",
    "notifications_requeue_due",
    "system_event_record",
    "user_preferences_update",
    "webhook_url_check",
]
