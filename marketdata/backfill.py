"""Historical bars from a venue's REST API: Coinbase product candles, OANDA instrument candles.
No Django: services.candles_backfill stores what this returns."""

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.coinbase import REST_URL as COINBASE_REST_URL
from marketdata.adapters.coinbase import CoinbaseRest, coinbase_signer
from marketdata.adapters.oanda import REST_URL as OANDA_REST_URL
from marketdata.adapters.oanda import OandaRest, oanda_token
from marketdata.bars import TIMEFRAME_SECONDS, Bar

BACKFILL_KINDS = frozenset({"coinbase", "oanda"})


class BackfillUnavailable(Exception):
    """The venue has no candle history we can read (its kind, or no credentials)."""


def last_day(timeframe: str, now: int) -> tuple[int, int]:
    """The window [start, end) covering the last 24 h, its start aligned down to the timeframe so
    the bar in progress a day ago (yesterday's daily bar, for 1d) is included."""
    step = TIMEFRAME_SECONDS[timeframe]
    return (now - 86400) // step * step, now


def can_backfill(venue: VenueConfig) -> bool:
    if venue.kind == "coinbase":
        return coinbase_signer(venue.credentials) is not None
    if venue.kind == "oanda":
        return bool(oanda_token(venue.credentials))
    return False


def venue_bars(
    venue: VenueConfig, *, venue_symbol: str, symbol: str, timeframe: str, start: int, end: int
) -> list[Bar]:
    """Closed bars with start in [start, end) (UNIX seconds), oldest first."""
    if not can_backfill(venue):
        raise BackfillUnavailable(f"venue {venue.code} ({venue.kind}) has no readable candle history")
    if venue.kind == "coinbase":
        with CoinbaseRest(
            signer=coinbase_signer(venue.credentials),
            base_url=str(venue.config.get("rest_url", COINBASE_REST_URL)),
            venue=venue.code,
        ) as coinbase:
            return coinbase.candles(
                product_id=venue_symbol, symbol=symbol, timeframe=timeframe, start=start, end=end
            )
    with OandaRest(
        token=oanda_token(venue.credentials),
        base_url=str(venue.config.get("rest_url", OANDA_REST_URL)),
        venue=venue.code,
    ) as oanda:
        return oanda.candles(
            instrument=venue_symbol, symbol=symbol, timeframe=timeframe, start=start, end=end
        )
