"""REST: instruments, latest quotes, candles (gap-filled, cursor-paginated) and recorded ticks."""

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketdata import selectors
from marketdata.bars import TIMEFRAME_SECONDS, bar_to_wire
from marketdata.models import Instrument
from marketdata.streams import SYMBOL_RE

MAX_LIMIT = 1000
ERRORS = {
    400: OpenApiResponse(description='Bad parameters: {"error": {"code": "invalid", "fields": {...}}}'),
    404: OpenApiResponse(description='Unknown symbol: {"error": {"code": "unknown_symbol"}}'),
}


def cursor_encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def cursor_decode(raw: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise serializers.ValidationError("Invalid cursor.") from exc


def plain(value: Decimal | None) -> str | None:
    """A stored decimal as a string without the column's padding zeros or an exponent."""
    return None if value is None else format(value.normalize(), "f")


class InstrumentSerializer(serializers.ModelSerializer[Instrument]):
    class Meta:
        model = Instrument
        fields = (
            "symbol",
            "description",
            "base_currency",
            "quote_currency",
            "contract_size",
            "digits",
            "tick_size",
            "pip_size",
            "volume_min",
            "volume_max",
            "volume_step",
            "margin_rate",
            "tradable",
        )


class QuoteSerializer(serializers.Serializer[dict[str, Any]]):
    symbol = serializers.CharField()
    seq = serializers.IntegerField(help_text="Per-symbol sequence number of the selected quote (0: none yet)")
    tradable = serializers.BooleanField(help_text="False when no venue is healthy: no fill, no trigger")
    venue = serializers.CharField(allow_null=True)
    bid = serializers.CharField(allow_null=True, help_text="Decimal as a string")
    ask = serializers.CharField(allow_null=True, help_text="Decimal as a string")
    ts = serializers.IntegerField(allow_null=True, help_text="Venue time, epoch milliseconds")


class QuoteQuerySerializer(serializers.Serializer[dict[str, Any]]):
    symbols = serializers.CharField(required=False, help_text="Comma-separated symbols; all when absent")

    def validate_symbols(self, value: str) -> list[str]:
        symbols = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in symbols if not SYMBOL_RE.match(s)]
        if not symbols or bad:
            raise serializers.ValidationError("Give symbols as EURUSD,GBPUSD (A-Z, 0-9).")
        return list(dict.fromkeys(symbols))


UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RangeQuerySerializer(serializers.Serializer[dict[str, Any]]):
    start = serializers.DateTimeField(required=False, help_text="ISO 8601, inclusive (UTC if no offset)")
    end = serializers.DateTimeField(required=False, help_text="ISO 8601, exclusive; default now")
    limit = serializers.IntegerField(required=False, default=500, min_value=1, max_value=MAX_LIMIT)
    cursor = serializers.CharField(required=False, help_text="The `next` of the previous page")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("end", datetime.now(UTC))
        for name in ("start", "end"):  # bars and ticks are kept and paged by Unix time
            if attrs.get(name) is not None and attrs[name] < UNIX_EPOCH:
                raise serializers.ValidationError({name: ["Must be on or after 1970-01-01T00:00:00Z."]})
        if attrs.get("start") is not None and attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"start": ["start must be before end."]})
        return attrs


class CandleQuerySerializer(RangeQuerySerializer):
    tf = serializers.ChoiceField(choices=list(TIMEFRAME_SECONDS), default="1m")

    def validate_cursor(self, value: str) -> int:
        decoded = cursor_decode(value)
        if not isinstance(decoded, dict) or not isinstance(decoded.get("start"), int):
            raise serializers.ValidationError("Invalid cursor.")
        return int(decoded["start"])


class TickQuerySerializer(RangeQuerySerializer):
    def validate_cursor(self, value: str) -> tuple[datetime, int]:
        decoded = cursor_decode(value)
        try:
            ts, seq = decoded["ts"], decoded["seq"]
            return datetime.fromisoformat(ts), int(seq)
        except (TypeError, KeyError, ValueError) as exc:
            raise serializers.ValidationError("Invalid cursor.") from exc


class BarSerializer(serializers.Serializer[dict[str, Any]]):
    symbol = serializers.CharField()
    tf = serializers.CharField()
    start = serializers.DateTimeField()
    o = serializers.CharField(help_text="Open, decimal as a string")
    h = serializers.CharField(help_text="High")
    l = serializers.CharField(help_text="Low")  # noqa: E741
    c = serializers.CharField(help_text="Close")
    volume = serializers.CharField(help_text="Traded volume; 0 for a bar of the mid (tick volume in `ticks`)")
    ticks = serializers.IntegerField(help_text="Trades in the bar, or quotes for a bar of the mid")
    synthetic = serializers.BooleanField(help_text="A gap filled at read time (OHLC = previous close)")
    # The metaclass takes declared fields off the class, so this never shadows Field.source.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["trades", "mid", "backfill"],
        help_text="Built here from the venue's trades, from its mid, or the venue's own bar (backfill)",
    )
    venue = serializers.CharField(help_text="Code of the venue the bar came from")


class CandlePageSerializer(serializers.Serializer[dict[str, Any]]):
    symbol = serializers.CharField()
    tf = serializers.CharField()
    results = BarSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="Cursor of the next page, null at the end")


class TickSerializer(serializers.Serializer[dict[str, Any]]):
    ts = serializers.DateTimeField()
    venue = serializers.CharField()
    bid = serializers.CharField()
    ask = serializers.CharField()
    bid_size = serializers.CharField(allow_null=True)
    ask_size = serializers.CharField(allow_null=True)
    seq = serializers.IntegerField()


class TickPageSerializer(serializers.Serializer[dict[str, Any]]):
    symbol = serializers.CharField()
    results = TickSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="Cursor of the next page, null at the end")


def _query(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


SYMBOL_PARAM = OpenApiParameter("symbol", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. EURUSD")


class InstrumentListView(APIView):
    serializer_class = InstrumentSerializer

    @extend_schema(responses=InstrumentSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(InstrumentSerializer(selectors.instrument_list(), many=True).data)


class QuoteListView(APIView):
    @extend_schema(parameters=[QuoteQuerySerializer], responses={200: QuoteSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        query = _query(QuoteQuerySerializer, request)
        return Response(selectors.quote_list(symbols=query.get("symbols")))


class CandleListView(APIView):
    @extend_schema(
        parameters=[SYMBOL_PARAM, CandleQuerySerializer],
        responses={200: CandlePageSerializer, **ERRORS},
        description="Closed bars of the selected mid, oldest first. A bar with no quote is returned "
        "as a synthetic bar (OHLC = previous close, volume 0, synthetic=true).",
    )
    def get(self, request: Request, symbol: str) -> Response:
        instrument = selectors.instrument_get(symbol=symbol)
        query = _query(CandleQuerySerializer, request)
        tf, limit = query["tf"], query["limit"]
        end = int(query["end"].timestamp())
        start = (
            query["cursor"]
            if "cursor" in query
            else int(query["start"].timestamp())
            if "start" in query
            else end - limit * TIMEFRAME_SECONDS[tf]
        )
        bars, following = selectors.candle_page(
            instrument=instrument, timeframe=tf, start=start, end=end, limit=limit
        )
        return Response(
            {
                "symbol": instrument.symbol,
                "tf": tf,
                "results": [bar_to_wire(bar) for bar in bars],
                "next": cursor_encode({"start": following}) if following is not None else None,
            }
        )


class TickListView(APIView):
    @extend_schema(
        parameters=[SYMBOL_PARAM, TickQuerySerializer],
        responses={200: TickPageSerializer, **ERRORS},
        description="Recorded selected quotes, oldest first (default: the last hour).",
    )
    def get(self, request: Request, symbol: str) -> Response:
        instrument = selectors.instrument_get(symbol=symbol)
        query = _query(TickQuerySerializer, request)
        start = query.get("start") or query["end"] - timedelta(hours=1)
        rows, following = selectors.tick_page(
            symbol=instrument.symbol,
            start=start,
            end=query["end"],
            limit=query["limit"],
            after=query.get("cursor"),
        )
        results = [
            {
                "ts": row["ts"].isoformat(),
                "venue": row["venue"],
                "bid": plain(row["bid"]),
                "ask": plain(row["ask"]),
                "bid_size": plain(row["bid_size"]),
                "ask_size": plain(row["ask_size"]),
                "seq": row["seq"],
            }
            for row in rows
        ]
        return Response(
            {
                "symbol": instrument.symbol,
                "results": results,
                "next": cursor_encode({"ts": following[0].isoformat(), "seq": following[1]})
                if following
                else None,
            }
        )
