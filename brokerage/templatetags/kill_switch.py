"""The kill switch panel of the admin index (templates/admin/brokerage/_kill_switch.html)."""

from typing import Any

from django import template

from ..models import TradingStatus
from ..selectors import trading_state_rows

register = template.Library()


@register.inclusion_tag("admin/brokerage/_kill_switch.html", takes_context=True)
def kill_switch_panel(context: template.Context) -> dict[str, Any]:
    """Every scope not active, and the one-click switch for those who may set trading states."""
    request = context["request"]
    if not request.user.has_perm("brokerage.view_tradingstate"):
        return {"visible": False}
    return {
        "visible": True,
        "restricted": list(trading_state_rows().exclude(state=TradingStatus.ACTIVE)),
        "can_set": request.user.has_perm("brokerage.set_trading_state"),
        "csrf_token": context.get("csrf_token"),
    }
