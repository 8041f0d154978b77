"""The operator dashboard on the admin index: one panel per concern, each read by its app's selectors
and shown only to operators holding the panel's permission. templates/admin/index.html draws a block
per panel (guarded by the same permission) and polls `dashboard_view` every few seconds."""

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from alerts.selectors import notifications_failed
from brokerage.console import exposure_table, margin_table
from brokerage.selectors import accounts_in_margin_call, cash_operations_pending, exposure_by_instrument
from fix.selectors import fix_sessions_with_state
from kernel.live import LiveTable, link, live_response, text
from marketdata.selectors import venue_health


def feed_health_table() -> LiveTable:
    table = LiveTable(
        ("Venue", "Kind", "Adapter", "Healthy symbols", "Connection silent (ms)", "Reconnects", "Last error"),
        "No venue adapter is reporting: is the market process (manage.py runmarket) running?",
    )
    live = reverse("admin:marketdata_live_quotes")
    for row in venue_health():
        table.rows.append(
            [
                link(row["venue"], live),
                row["kind"],
                row["state"],
                f"{row['symbols_healthy']} / {row['symbols']}",
                text(row["silent_ms"]),
                str(row["reconnects"]),
                text(row["last_error"]),
            ]
        )
    return table


def fix_sessions_table() -> LiveTable:
    table = LiveTable(
        ("Session", "Enabled", "State", "Next in", "Next out", "Logons", "Last logout"), "No FIX session."
    )
    for session, state in fix_sessions_with_state():
        status = "not running" if state is None else "logged on" if state.get("logged_on") else "down"
        state = state or {}
        table.rows.append(
            [
                link(session.name, reverse("admin:fix_fixsession_change", args=[session.pk])),
                "yes" if session.enabled else "no",
                status,
                text(state.get("next_in")),
                text(state.get("next_out")),
                text(state.get("logons")),
                text(state.get("last_logout_text")),
            ]
        )
    return table


def margin_call_table() -> LiveTable:
    return margin_table(accounts_in_margin_call(), empty="No account in margin call.")


def four_eyes_table() -> LiveTable:
    table = LiveTable(
        ("Operation", "Account", "Amount", "Requested by", "Requested at (UTC)"),
        "No cash operation waits for approval.",
    )
    for operation in cash_operations_pending():
        table.rows.append(
            [
                link(
                    f"{operation.get_kind_display()} #{operation.pk}",
                    reverse("admin:brokerage_cashoperation_change", args=[operation.pk]),
                ),
                str(operation.account),
                f"{operation.amount} {operation.currency}",
                str(operation.created_by),
                f"{operation.created_at:%Y-%m-%d %H:%M:%S}",
            ]
        )
    return table


def notification_failures_table() -> LiveTable:
    table = LiveTable(
        ("Notification", "Channel", "Attempts", "Last error", "Created (UTC)"), "No failed notification."
    )
    for notification in notifications_failed():
        subject = notification.event or notification.system_notice
        table.rows.append(
            [
                link(
                    f"#{notification.pk} {subject}",
                    reverse("admin:alerts_notification_change", args=[notification.pk]),
                ),
                str(notification.channel),
                str(notification.attempts),
                text(notification.last_error[:200]),
                f"{notification.created_at:%Y-%m-%d %H:%M:%S}",
            ]
        )
    return table


@dataclass(frozen=True)
class Panel:
    name: str
    permission: str
    table: Callable[[], LiveTable]


PANELS = (
    Panel("feed_health", "marketdata.view_venue", feed_health_table),
    Panel("fix_sessions", "fix.view_fixsession", fix_sessions_table),
    Panel(
        "exposure",
        "brokerage.view_position",
        lambda: exposure_table(exposure_by_instrument(), by_group=False),
    ),
    Panel("margin_call", "brokerage.view_tradingaccount", margin_call_table),
    Panel("four_eyes", "brokerage.view_cashoperation", four_eyes_table),
    Panel("notification_failures", "alerts.view_notification", notification_failures_table),
)


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """The panels the operator may see, as the index page polls them (staff only: admin_view)."""
    panels = [p for p in PANELS if request.user.has_perm(p.permission)]
    if not panels:
        raise PermissionDenied
    return live_response({p.name: p.table() for p in panels})
