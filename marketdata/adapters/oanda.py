"""OANDA v20: the pricing stream adapter and the instrument candles REST client
(shared/PROTOCOLS.md section 3).

The API token (never logged) comes from the venue's credentials `token`, else the environment
variable OANDA_TOKEN; the account id from the venue config `account_id`, else OANDA_ACCOUNT_ID. The
environment is read only for a request to one of OANDA's own hosts (OFFICIAL_ORIGINS): a venue
pointed anywhere else sends only its own credentials. Endpoints default to the live (fxTrade) hosts;
set `stream_url`/`rest_url` to the practice ones.
"""

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.quotes import Quote, now_ns

from .base import Adapter, MalformedMessage, QuoteSink, VenueConfig, official_url
from .rest import RestClient, VenueHttpError, error_message
from .streaming import ns_to_rfc3339, price, rfc3339_ns, watched

log = logging.getLogger(__name__)

STREAM_URL = "https://stream-fxtrade.oanda.com"
REST_URL = "https://api-fxtrade.oanda.com"
# developer.oanda.com/rest-live-v20/development-guide: fxTrade and fxTrade Practice, REST and streaming.
OFFICIAL_ORIGINS = frozenset(
    {
        REST_URL,
        STREAM_URL,
        "https://api-fxpractice.oanda.com",
        "https://stream-fxpractice.oanda.com",
    }
)
ENV_TOKEN, ENV_ACCOUNT = "OANDA_TOKEN", "OANDA_ACCOUNT_ID"
MAX_CANDLES_PER_REQUEST = 5000
GRANULARITY = {"1m": "M1", "5m": "M5", "15m": "M15", "1h": "H1", "4h": "H4", "1d": "D"}


def oanda_token(credentials: Mapping[str, str], *, url: str) -> str:
    """The token to send to `url`: the venue's own, else OANDA_TOKEN if `url` is OANDA's."""
    if token := credentials.get("token"):
        return token
    return os.environ.get(ENV_TOKEN, "") if official_url(url, OFFICIAL_ORIGINS) else ""


def oanda_account(config: Mapping[str, Any], *, url: str) -> str:
    if account := config.get("account_id"):
        return str(account)
    return os.environ.get(ENV_ACCOUNT, "") if official_url(url, OFFICIAL_ORIGINS) else ""


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept-Datetime-Format": "RFC3339"}


class OandaAdapter(Adapter):
    """PRICE lines -> Quote (best bid/ask); HEARTBEAT lines (every 5 s) feed the silence watchdog."""

    kind = "oanda"
    # OANDA: at most 20 active streams per IP, and no more than 2 new connections a second.
    connect_limit = (30, 60.0)
    min_stale_after_ms = 10_000  # HEARTBEAT lines every 5 s: two of them

    def __init__(self, venue: VenueConfig, sink: QuoteSink, **kwargs: Any) -> None:
        super().__init__(venue, sink, **kwargs)
        base = str(venue.config.get("stream_url", STREAM_URL)).rstrip("/")
        account = oanda_account(venue.config, url=base)
        self.url = f"{base}/v3/accounts/{account}/pricing/stream"
        self.token = oanda_token(venue.credentials, url=base)
        self.skipped = 0  # prices without a tradeable two-sided book

    @property
    def silence_timeout_s(self) -> float:
        return float(self.venue.config.get("silence_timeout_s", 15))

    async def session(self) -> None:
        if not self.token:
            raise VenueHttpError(self.venue.code, None, f"no OANDA token (credentials or {ENV_TOKEN})")
        params = {"instruments": ",".join(sorted(self.venue.symbols))}
        # No read timeout: silence is the watchdog's job, and heartbeats come every 5 s.
        timeout = httpx.Timeout(10.0, read=None)
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", self.url, params=params, headers=_headers(self.token)) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise VenueHttpError(self.venue.code, response.status_code, error_message(response))
            self.connected()
            async for line in watched(self, response.aiter_lines()):
                if not line.strip():
                    continue
                try:
                    self.handle(line)
                except (MalformedMessage, ValueError, KeyError, TypeError, AttributeError) as exc:
                    self.malformed(line, exc)

    def handle(self, line: str) -> None:
        message = json.loads(line)
        if not isinstance(message, dict):
            raise MalformedMessage("a line must be a JSON object")
        kind = message.get("type", "PRICE")
        if kind == "HEARTBEAT":
            return
        if kind != "PRICE":
            return
        symbol = self.venue.symbols.get(message["instrument"])
        if symbol is None:
            return
        venue_ts = rfc3339_ns(message["time"])
        bids, asks = message.get("bids") or [], message.get("asks") or []
        if message.get("tradeable") is False or not bids or not asks:
            self.skipped += 1
            return
        self.emit(
            Quote(
                symbol=symbol,
                venue=self.venue.code,
                bid=price(bids[0]["price"]),
                ask=price(asks[0]["price"]),
                venue_ts=venue_ts,
                recv_ts=now_ns(),
                bid_size=price(str(bids[0]["liquidity"])) if "liquidity" in bids[0] else None,
                ask_size=price(str(asks[0]["liquidity"])) if "liquidity" in asks[0] else None,
            )
        )


class OandaRest(RestClient):
    def __init__(self, *, token: str, base_url: str = REST_URL, venue: str = "oanda", **kw: Any) -> None:
        super().__init__(venue=venue, base_url=base_url, **kw)
        self.token = token

    def auth_headers(self, request: httpx.Request) -> dict[str, str]:
        return _headers(self.token)

    def instruments(self, account_id: str) -> Any:
        """The account's tradeable instruments: `{"instruments": [...], "lastTransactionID"}`."""
        return self.get(f"/v3/accounts/{account_id}/instruments")

    def candles(
        self,
        *,
        instrument: str,
        symbol: str,
        timeframe: str,
        start: int,
        end: int,
        on_page: Callable[[int], None] | None = None,
    ) -> list[Bar]:
        """Complete mid bars whose start is in [start, end) (UNIX seconds), oldest first, paged with
        `from` + `count` (at most 5000 per request). Daily bars are aligned to 00:00 UTC like ours.

        OANDA's `volume` counts price updates, so it becomes the bar's tick_count."""
        step = TIMEFRAME_SECONDS[timeframe]
        params: dict[str, str | int] = {
            "granularity": GRANULARITY[timeframe],
            "price": "M",
            "from": ns_to_rfc3339(start * 1_000_000_000),
            "includeFirst": "true",
            "dailyAlignment": 0,
            "alignmentTimezone": "UTC",
        }
        bars: list[Bar] = []
        cursor = start
        while cursor < end:
            count = min(MAX_CANDLES_PER_REQUEST, -(-(end - cursor) // step))
            page = self.get(f"/v3/instruments/{instrument}/candles", {**params, "count": count})
            candles = page.get("candles") or []
            if on_page is not None:
                on_page(len(candles))
            for candle in candles:
                bar_start = rfc3339_ns(candle["time"]) // 1_000_000_000
                if bar_start >= end or not candle.get("complete"):
                    return bars
                if bar_start >= start:
                    mid = candle["mid"]
                    bars.append(
                        Bar(
                            symbol=symbol,
                            timeframe=timeframe,
                            start=bar_start,
                            open=price(mid["o"]),
                            high=price(mid["h"]),
                            low=price(mid["l"]),
                            close=price(mid["c"]),
                            tick_count=int(candle.get("volume", 0)),
                        )
                    )
            if len(candles) < count:
                return bars
            # The next page starts after the last candle received (includeFirst=false skips it).
            params.update({"from": candles[-1]["time"], "includeFirst": "false"})
            cursor = rfc3339_ns(candles[-1]["time"]) // 1_000_000_000 + step
        return bars
