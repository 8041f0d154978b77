"""Discord webhook messages: the alert embed and one POST, with the rate-limit answer parsed.
No Django. Wire format: PROTOCOLS.md section 4 (discord-api-docs resources/webhook, topics/rate-limits).

The webhook URL carries the webhook's token: it never appears in a log line or a stored error.
"""

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from alerts.indicators import LOW_TRADING_ACTIVITY, UNKNOWN

log = logging.getLogger(__name__)

COLOURS = {"up": 0x2ECC71, "down": 0xE74C3C, "neutral": 0x95A5A6}
CHART_FILENAME = "chart.png"
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
UNKNOWN_WEBHOOK = 10015


# (lower bound of |price|, decimal places), first match wins: the replaced system's Discord prices.
PRICE_DECIMALS = ((Decimal(1), 2), (Decimal("0.01"), 4), (Decimal("0.0001"), 6), (Decimal(0), 8))


def format_price(price: Decimal) -> str:
    """2 decimals at or above 1, 4 at or above 0.01, 6 at or above 0.0001, else 8, as the replaced
    system showed prices; rounded half up, thousands grouped with commas."""
    magnitude = abs(price)
    places = next(p for bound, p in PRICE_DECIMALS if magnitude >= bound)
    return f"{price.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,f}"


def format_value(value: Decimal | float | None) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def format_frame(value: float | None, stage: str) -> str:
    """A timeframe's MACD-V and its stage: "-160.00 (oversold)"; "n/a" before it is seeded."""
    return "n/a" if value is None else f"{format_value(value)} ({stage})"


def format_time(at: datetime, zone: ZoneInfo, *, seconds: bool = True) -> str:
    """A wall-clock time in the reader's zone with its abbreviation: "2026-12-02 16:04:05 CET"."""
    local = at.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def format_liquidity(diagnostics: Mapping[str, Any] | None, *, seeded: bool) -> str:
    """ "high (nEff 200, span 200)"; "Low trading activity" while the MACD-V is not seeded, as
    Livermore said; "n/a" for an alert stored before diagnostics were kept."""
    if not seeded:
        return LOW_TRADING_ACTIVITY
    if diagnostics is None:
        return "n/a"
    return f"{diagnostics['liquidity']} (nEff {diagnostics['n_eff']}, span {diagnostics['span']})"


def alert_embed(
    *,
    title: str,
    value: Decimal,
    value_name: str,
    price: Decimal | None,
    timeframe: str,
    frames: Mapping[str, float | None],
    stages: Mapping[str, str],
    bias: str,
    diagnostics: Mapping[str, Any] | None,
    direction: str,
    fired_at: datetime,
    bar_start: datetime,
    zone: ZoneInfo,
    footer: str,
    with_chart: bool,
) -> dict[str, Any]:
    """The alert's embed: its value, the price, the symbol's MACD-V bias, each timeframe's MACD-V and
    stage, the liquidity diagnostics of the alert's timeframe, and when it fired and the bar's start
    in the reader's zone (`timestamp` stays UTC: Discord shows it in the reader's client zone)."""
    fields = [
        {"name": value_name, "value": format_value(value), "inline": True},
        {"name": "Price", "value": format_price(price) if price is not None else "n/a", "inline": True},
        {"name": "Bias", "value": bias, "inline": True},
        *(
            {
                "name": f"MACD-V {tf}",
                "value": format_frame(frames.get(tf), stages.get(tf, UNKNOWN)),
                "inline": True,
            }
            for tf in TIMEFRAMES
        ),
        {
            "name": f"Liquidity {timeframe}",
            "value": format_liquidity(diagnostics, seeded=frames.get(timeframe) is not None),
            "inline": True,
        },
        {"name": "Fired", "value": format_time(fired_at, zone), "inline": True},
        {"name": f"Bar {timeframe}", "value": format_time(bar_start, zone, seconds=False), "inline": True},
    ]
    embed: dict[str, Any] = {
        "type": "rich",
        "title": title[:256],
        "color": COLOURS.get(direction, COLOURS["neutral"]),
        "fields": fields,
        "footer": {"text": footer[:2048]},
        "timestamp": fired_at.astimezone(UTC).isoformat(),
    }
    if with_chart:
        embed["image"] = {"url": f"attachment://{CHART_FILENAME}"}
    return embed


def test_embed(*, channel_name: str, sent_at: datetime, zone: ZoneInfo) -> dict[str, Any]:
    """The message "send test message" posts: shows the webhook works, looks like no alert."""
    return {
        "type": "rich",
        "title": "Livermore test message"[:256],
        "description": f"Alerts for the channel \u201c{channel_name[:100]}\u201d will be posted here. "
        f"Sent {format_time(sent_at, zone)}.",
        "color": COLOURS["neutral"],
        "footer": {"text": "Livermore test message"},
        "timestamp": sent_at.astimezone(UTC).isoformat(),
    }


# System notice kinds (kernel.sysevents) shown in red or green; the others are amber.
BAD_KINDS = frozenset(
    {"venue.down", "fix.logout", "fix.logon_refused", "account.stop_out", "task.failure"}
    | {"outbox.dead_letters"}
)
GOOD_KINDS = frozenset({"venue.up", "fix.logon", "process.start"})
AMBER = 0xF39C12
DESCRIPTION_MAX = 4096


def system_embed(*, kind: str, title: str, lines: list[str], at: datetime, footer: str) -> dict[str, Any]:
    """A system notice: one line per grouped event, cut to Discord's description limit."""
    description = ""
    for n, line in enumerate(lines):
        more = f"\n\u2026 and {len(lines) - n} more"
        if len(description) + len(line) + 1 + len(more) > DESCRIPTION_MAX:
            description += more
            break
        description += ("\n" if description else "") + line
    if kind in BAD_KINDS:
        colour = COLOURS["down"]
    elif kind in GOOD_KINDS:
        colour = COLOURS["up"]
    else:
        colour = AMBER
    return {
        "type": "rich",
        "title": title[:256],
        "description": description,
        "color": colour,
        "footer": {"text": footer[:2048]},
        "timestamp": at.astimezone(UTC).isoformat(),
    }


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What a POST came to. `retry_after`: a 429's wait; `blocked_for`: the bucket is empty
    (X-RateLimit-Remaining: 0) for this long even though the request succeeded."""

    status: int  # 0 when no response arrived (timeout, connection error): the outcome is unknown
    error: str = ""
    code: int | None = None
    retry_after: float | None = None
    is_global: bool = False  # a 429 of the global (per IP) limit: every webhook must wait
    scope: str = ""  # X-RateLimit-Scope of a 429: user, global or shared
    blocked_for: float | None = None
    message_id: str = ""
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def invalid(self) -> bool:
        """Counts toward Discord's invalid request limit (10,000 per 10 minutes per IP, then a ban):
        401, 403 and 429, except a 429 of a shared resource's limit."""
        return self.status in (401, 403) or (self.status == 429 and self.scope != "shared")


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f >= 0 else None


def webhook_post(
    client: httpx.Client,
    url: str,
    *,
    embed: dict[str, Any],
    png: bytes | None,
    timeout_s: float,
    log_ref: str,
) -> WebhookResult:
    """Executes the webhook with ?wait=true, so a 200 confirms the message exists and carries its id.
    `log_ref` names the channel and row in logs instead of the URL.

    A request without an answer (timeout, broken connection) has an unknown outcome: Discord may
    have posted the message. The webhook API has no idempotency key and no way to find a message
    but by its id, so the caller can only retry and accept a possible duplicate (status 0)."""
    payload: dict[str, Any] = {"embeds": [embed], "allowed_mentions": {"parse": []}}
    started = time.monotonic()
    try:
        if png is None:
            response = client.post(url, params={"wait": "true"}, json=payload, timeout=timeout_s)
        else:
            payload["attachments"] = [{"id": 0, "filename": CHART_FILENAME}]
            files = {
                "payload_json": (None, json.dumps(payload).encode(), "application/json"),
                "files[0]": (CHART_FILENAME, png, "image/png"),
            }
            response = client.post(url, params={"wait": "true"}, files=files, timeout=timeout_s)
    except httpx.TimeoutException:
        elapsed_ms = (time.monotonic() - started) * 1000
        log.warning(
            "discord %s timed out after %.0fms: the message may have been posted", log_ref, elapsed_ms
        )
        return WebhookResult(0, error=f"timeout after {timeout_s:g}s", elapsed_ms=elapsed_ms)
    except httpx.HTTPError as exc:
        elapsed_ms = (time.monotonic() - started) * 1000
        # httpx messages can quote the request URL: keep only the exception kind.
        log.warning("discord %s failed: %s", log_ref, type(exc).__name__)
        return WebhookResult(0, error=f"connection error ({type(exc).__name__})", elapsed_ms=elapsed_ms)
    elapsed_ms = (time.monotonic() - started) * 1000
    headers = response.headers
    blocked_for = (
        _float(headers.get("X-RateLimit-Reset-After"))
        if headers.get("X-RateLimit-Remaining") == "0"
        else None
    )
    body: dict[str, Any] = {}
    if response.content:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else {}
    log.info(
        "discord %s status=%s remaining=%s in %.0fms",
        log_ref,
        response.status_code,
        headers.get("X-RateLimit-Remaining"),
        elapsed_ms,
    )
    if response.is_success:
        return WebhookResult(
            response.status_code,
            blocked_for=blocked_for,
            message_id=str(body.get("id", "")),
            elapsed_ms=elapsed_ms,
        )
    code = body.get("code") if isinstance(body.get("code"), int) else None
    message = str(body.get("message", response.reason_phrase))[:500]
    retry_after, is_global = None, False
    if response.status_code == 429:
        is_global = body.get("global") is True or headers.get("X-RateLimit-Global") == "true"
        retry_after = _float(body.get("retry_after"))
        if retry_after is None:
            retry_after = _float(headers.get("Retry-After")) or 1.0
    return WebhookResult(
        response.status_code,
        error=f"HTTP {response.status_code}: {message}" + (f" (code {code})" if code else ""),
        code=code,
        retry_after=retry_after,
        is_global=is_global,
        scope=headers.get("X-RateLimit-Scope", ""),
        blocked_for=blocked_for,
        elapsed_ms=elapsed_ms,
    )
