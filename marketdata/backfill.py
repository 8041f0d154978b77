"""Historical bars from a venue's REST API: Coinbase public product candles, Binance klines (both
public, no key), OANDA instrument candles (token). No Django: services.candles_backfill stores what
this returns."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.binance import REST_URL as BINANCE_REST_URL
from marketdata.adapters.binance import BinanceRest
from marketdata.adapters.coinbase import REST_URL as COINBASE_REST_URL
from marketdata.adapters.coinbase import CoinbaseRest
from marketdata.adapters.oanda import REST_URL as OANDA_REST_URL
from marketdata.adapters.oanda import OandaRest, oanda_token
from marketdata.adapters.rest import RestClient
from marketdata.bars import BACKFILL, TIMEFRAME_SECONDS, Bar

BACKFILL_KINDS = frozenset({"coinbase", "binance", "oanda"})


class BackfillUnavailable(Exception):
    """The venue has no candle history we can read (its kind, or no credentials)."""


@dataclass
class FetchProgress:
    """How far one fetch got: pages answered, candles received, retries waited out (429s)."""

    pages: int = 0
    bars: int = 0
    rate_limit_waits: int = 0


ProgressHook = Callable[[FetchProgress], None]


def last_day(timeframe: str, now: int) -> tuple[int, int]:
    """The window [start, end) covering the last 24 h, its start aligned down to the timeframe so
    the bar in progress a day ago (yesterday's daily bar, for 1d) is included."""
    step = TIMEFRAME_SECONDS[timeframe]
    return (now - 86400) // step * step, now


def can_backfill(venue: VenueConfig) -> bool:
    if venue.kind in ("coinbase", "binance"):
        return True  # public endpoints
    if venue.kind == "oanda":
        return bool(oanda_token(venue.credentials, url=_oanda_rest_url(venue)))
    return False


def _client(venue: VenueConfig) -> RestClient:
    if venue.kind == "coinbase":
        # Public candles: no signer, so no credential is ever sent for history.
        return CoinbaseRest(
            signer=None, base_url=str(venue.config.get("rest_url", COINBASE_REST_URL)), venue=venue.code
        )
    if venue.kind == "binance":
        return BinanceRest(base_url=str(venue.config.get("rest_url", BINANCE_REST_URL)), venue=venue.code)
    base_url = _oanda_rest_url(venue)
    return OandaRest(token=oanda_token(venue.credentials, url=base_url), base_url=base_url, venue=venue.code)


def _oanda_rest_url(venue: VenueConfig) -> str:
    return str(venue.config.get("rest_url", OANDA_REST_URL))


def venue_bars(
    venue: VenueConfig,
    *,
    venue_symbol: str,
    symbol: str,
    timeframe: str,
    start: int,
    end: int,
    progress: ProgressHook | None = None,
) -> list[Bar]:
    """The venue's closed bars with start in [start, end) (UNIX seconds), oldest first, marked as
    backfilled from this venue. `progress` is called after every page."""
    if not can_backfill(venue):
        raise BackfillUnavailable(f"venue {venue.code} ({venue.kind}) has no readable candle history")
    state = FetchProgress()
    with _client(venue) as client:

        def on_page(count: int) -> None:
            state.pages, state.rate_limit_waits = client.requests, client.waits
            state.bars += count
            if progress is not None:
                progress(state)

        if isinstance(client, CoinbaseRest):
            bars = client.candles(
                product_id=venue_symbol,
                symbol=symbol,
                timeframe=timeframe,
                start=start,
                end=end,
                on_page=on_page,
            )
        elif isinstance(client, BinanceRest):
            bars = client.klines(
                name=venue_symbol, symbol=symbol, timeframe=timeframe, start=start, end=end, on_page=on_page
            )
        else:
            assert isinstance(client, OandaRest)
            bars = client.candles(
                instrument=venue_symbol,
                symbol=symbol,
                timeframe=timeframe,
                start=start,
                end=end,
                on_page=on_page,
            )
    return [dataclasses.replace(bar, source=BACKFILL, venue=venue.code) for bar in bars]
