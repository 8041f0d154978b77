import re
import time
from datetime import UTC, datetime
from typing import Any, cast

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse, HttpResponseBase
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import get_object_or_404
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import rules, selectors, services
from alerts.indicators import INDICATOR_NAMES, LIQUIDITY_TIERS, MACDV_STAGES, DiagnosticsJson
from alerts.models import SIGNALS_PERMISSION, AlertEvent, AlertRule, IndicatorValue, NotificationChannel
from alerts.selectors import indicator_values
from alerts.signal_grid import BIASES, REASONS, STAGES, TIMEFRAMES, Signal
from kernel.errors import ServiceError
from kernel.pagination import PaginatedListView
from kernel.versions import VersionedCache
from marketdata.models import Instrument, Timeframe
from users.authentication import request_user
from users.models import User, timezone_validate

MAX_LIMIT = 5000


class IndicatorQuerySerializer(serializers.Serializer):
    tf = serializers.ChoiceField(choices=Timeframe.values, help_text="Timeframe: 1m 5m 15m 1h 4h 1d")
    name = serializers.ChoiceField(
        choices=INDICATOR_NAMES, required=False, help_text="One indicator; all of them if left out"
    )
    start = serializers.DateTimeField(required=False, help_text="First bar start (ISO 8601)")
    end = serializers.DateTimeField(required=False, help_text="Last bar start (ISO 8601)")
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=500)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "start" in attrs and "end" in attrs and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": ["end must not be before start."]})
        return attrs


class DiagnosticsSerializer(serializers.Serializer):
    n_eff = serializers.IntegerField(help_text="Real bars behind the ATR, of the last 200 real bars")
    span = serializers.IntegerField(help_text="Bars from the first of those real bars to the last")
    gap_ratio = serializers.FloatField(help_text="Share of synthetic (gap) bars in the span, 0 to 1")
    liquidity = serializers.ChoiceField(
        choices=LIQUIDITY_TIERS, help_text="high below 20% synthetic bars, medium below 50%, else low"
    )


class IndicatorValueSerializer(serializers.ModelSerializer[IndicatorValue]):
    stage = serializers.ChoiceField(
        choices=MACDV_STAGES, read_only=True, allow_null=True, help_text="MACD-V only: its stage"
    )
    diagnostics = serializers.SerializerMethodField(help_text="MACD-V only, when stored")

    class Meta:
        model = IndicatorValue
        fields = ("name", "start", "value", "signal", "histogram", "stage", "diagnostics")

    @extend_schema_field(DiagnosticsSerializer(allow_null=True))
    def get_diagnostics(self, obj: IndicatorValue) -> DiagnosticsJson | None:
        diagnostics = obj.diagnostics
        return diagnostics.to_json() if diagnostics else None


class IndicatorSeriesSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    results = IndicatorValueSerializer(many=True)


class IndicatorListView(APIView):
    """Stored indicator values of closed bars, oldest first: the latest `limit` in [start, end]."""

    @extend_schema(parameters=[IndicatorQuerySerializer], responses=IndicatorSeriesSerializer)
    def get(self, request: Request, symbol: str) -> Response:
        query = IndicatorQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        instrument = Instrument.objects.filter(symbol=symbol).first()
        if instrument is None:
            raise NotFound(f"Unknown symbol {symbol!r}.")
        params = query.validated_data
        rows = indicator_values(
            instrument=instrument,
            timeframe=params["tf"],
            name=params.get("name"),
            start=params.get("start"),
            end=params.get("end"),
            limit=params["limit"],
        )
        body = {"symbol": instrument.symbol, "timeframe": params["tf"], "results": rows}
        return Response(IndicatorSeriesSerializer(body).data)


class CanViewSignals(permissions.BasePermission):
    message = "Viewing signals needs the permission alerts.view_signals."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.has_perm(SIGNALS_PERMISSION))


def _choices(value: str, choices: tuple[str, ...], what: str) -> list[str]:
    """Comma-separated values, each one of `choices` (any case); the canonical spelling back."""
    canonical = {c.lower(): c for c in choices}
    given = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in given if v.lower() not in canonical]
    if not given or unknown:
        raise serializers.ValidationError(
            f"Unknown {what} {', '.join(map(repr, unknown)) or repr(value)}: one or more of "
            f"{', '.join(choices)}, comma-separated."
        )
    return list(dict.fromkeys(canonical[v.lower()] for v in given))


class SignalQuerySerializer(serializers.Serializer[dict[str, Any]]):
    symbol = serializers.CharField(
        required=False, help_text="Comma-separated enabled instruments, e.g. EURUSD,BTCUSD; all when absent"
    )
    tf = serializers.CharField(
        required=False, help_text=f"Comma-separated timeframes of {' '.join(TIMEFRAMES)}"
    )
    stage = serializers.CharField(required=False, help_text=f"Comma-separated stages of {', '.join(STAGES)}")
    bias = serializers.CharField(required=False, help_text=f"Comma-separated biases of {', '.join(BIASES)}")
    defaults = serializers.BooleanField(
        default=True,
        help_text="Without `symbol` (or `tf`), show the caller's default symbols (timeframes) where they "
        "set some (GET /api/v1/me/settings); false: every one",
    )

    def validate_symbol(self, value: str) -> list[str]:
        symbols = [s.strip() for s in value.split(",") if s.strip()]
        if not symbols:
            raise serializers.ValidationError("Give symbols as EURUSD,BTCUSD.")
        return list(dict.fromkeys(symbols))

    def validate_tf(self, value: str) -> list[str]:
        return _choices(value, TIMEFRAMES, "timeframe")

    def validate_stage(self, value: str) -> list[str]:
        return _choices(value, STAGES, "stage")

    def validate_bias(self, value: str) -> list[str]:
        return _choices(value, BIASES, "bias")


class SignalSerializer(serializers.Serializer[Signal]):
    """The schema of one row; the view renders rows itself (300 of them per request)."""

    symbol = serializers.CharField()
    timeframe = serializers.ChoiceField(choices=Timeframe.choices)
    value = serializers.CharField(allow_null=True, help_text="MACD-V of the as-of bar, decimal as a string")
    signal = serializers.CharField(allow_null=True, help_text="Its signal line (EMA9), null until seeded")
    histogram = serializers.CharField(allow_null=True, help_text="value - signal")
    stage = serializers.ChoiceField(choices=STAGES)
    bias = serializers.ChoiceField(choices=BIASES, help_text="The instrument's, over the six timeframes")
    seeded = serializers.BooleanField(help_text="Both the value and its signal are seeded")
    reason = serializers.ChoiceField(choices=REASONS, allow_null=True, help_text="Why not seeded, or null")
    as_of = serializers.DateTimeField(allow_null=True, help_text="Start of the closed bar the values are of")


class SignalListSerializer(serializers.Serializer[dict[str, Any]]):
    results = SignalSerializer(many=True)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _utc(value: datetime) -> str:
    """As DRF renders a datetime (UTC, "Z"), at a tenth of the cost: 300 of them per response."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def signal_to_wire(s: Signal) -> dict[str, Any]:
    return {
        "symbol": s.symbol,
        "timeframe": s.timeframe,
        "value": _text(s.value),
        "signal": _text(s.signal),
        "histogram": _text(s.histogram),
        "stage": s.stage,
        "bias": s.bias,
        "seeded": s.seeded,
        "reason": s.reason,
        "as_of": None if s.as_of is None else _utc(s.as_of),
    }


def _render_whole_grid(_: None) -> bytes:
    return JSONRenderer().render({"results": [signal_to_wire(s) for s in selectors.signal_list()]})


# The unfiltered grid's body, rendered once per data version (rendering 300 rows took 2 ms a request).
_whole_grid: VersionedCache[None, bytes] = VersionedCache(selectors.SIGNAL_GRID_VERSIONS, _render_whole_grid)


class SignalListView(APIView):
    """Every enabled instrument on the six timeframes: MACD-V, signal, histogram, stage and bias as of
    the latest closed bar with a stored value, or why there is none."""

    permission_classes = [permissions.IsAuthenticated, CanViewSignals]

    @extend_schema(
        parameters=[SignalQuerySerializer],
        responses={
            200: SignalListSerializer,
            400: OpenApiResponse(
                description='Unknown filter value: {"error": {"code": "invalid", "fields": {...}}}'
            ),
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        query = SignalQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = dict(query.validated_data)
        if params.pop("defaults") and not ("symbol" in params and "tf" in params):
            symbols, timeframes = selectors.default_series(user_id=request_user(request).pk)
            if symbols:
                params.setdefault("symbol", symbols)
            if timeframes:
                params.setdefault("tf", timeframes)
        if not params:  # the whole grid, as rendered for its data version
            return HttpResponse(_whole_grid.get(None), content_type="application/json")
        try:
            rows = selectors.signal_list(
                symbols=params.get("symbol"),
                timeframes=params.get("tf"),
                stages=params.get("stage"),
                biases=params.get("bias"),
            )
        except selectors.UnknownSymbols as exc:
            raise ServiceError(
                "invalid",
                "The request is not valid.",
                fields={"symbol": [f"Unknown or disabled instrument {s!r}." for s in exc.symbols]},
                status_code=status.HTTP_400_BAD_REQUEST,
            ) from exc
        return Response({"results": [signal_to_wire(s) for s in rows]})


SETTABLE_STATUSES = [AlertRule.Status.ACTIVE, AlertRule.Status.PAUSED]


class RuleStatusField(serializers.ChoiceField):
    """A rule's status: a client sets active or paused; a rule also reads triggered, expired or
    stopped, which only the engine sets."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=SETTABLE_STATUSES, default=AlertRule.Status.ACTIVE, **kwargs)

    def to_representation(self, value: Any) -> str:
        return str(value)


class RuleStatusFieldExtension(OpenApiSerializerFieldExtension):
    target_class = RuleStatusField

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Direction) -> dict[str, Any]:
        statuses = SETTABLE_STATUSES if direction == "request" else AlertRule.Status.values
        return {"enum": [str(s) for s in statuses], "type": "string"}


class AlertRuleSerializer(serializers.ModelSerializer[AlertRule]):
    symbol = serializers.SlugRelatedField(
        source="instrument", slug_field="symbol", queryset=Instrument.objects.all()
    )
    channel = serializers.PrimaryKeyRelatedField(
        queryset=NotificationChannel.objects.none(),
        allow_null=True,
        required=False,
        help_text="One of the caller's notification channels: the rule's alerts go there only. Left out "
        "on creation: the caller's default channel (GET /api/v1/me/settings); null: every enabled channel",
    )
    status = RuleStatusField()
    live = serializers.BooleanField(read_only=True)

    def __init__(self, *args: Any, owner: User | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if owner is not None:  # another user's channel is answered as one that does not exist
            channel = cast(serializers.PrimaryKeyRelatedField, self.fields["channel"])
            channel.queryset = selectors.notification_channels_for_user(user=owner)

    class Meta:
        model = AlertRule
        fields = (
            "id",
            "name",
            "symbol",
            "timeframe",
            "kind",
            "source",
            "condition",
            "threshold",
            "upper",
            "other",
            "bars",
            "frequency",
            "expires_at",
            "channel",
            "status",
            "live",
            "created_at",
            "updated_at",
            "last_fired_at",
        )
        read_only_fields = ("created_at", "updated_at", "last_fired_at")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        merged = {
            **{f: getattr(self.instance, f) for f in services.DEFINITION_FIELDS if self.instance},
            **attrs,
        }
        errors = rules.validate_spec(
            kind=merged.get("kind", rules.Kind.CONDITION),
            source=merged.get("source", rules.PRICE),
            condition=merged.get("condition", ""),
            threshold=merged.get("threshold"),
            upper=merged.get("upper"),
            other=merged.get("other", ""),
            bars=merged.get("bars", 1),
            frequency=merged.get("frequency", rules.Frequency.ONCE_PER_BAR_CLOSE),
        )
        if (self.instance is None or "expires_at" in attrs) and attrs.get("expires_at") is not None:
            errors |= rules.expiry_errors(expires_at=attrs["expires_at"].timestamp(), now=time.time())
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class AlertRuleListView(APIView):
    """A user's alert rules; each user sees and edits only their own."""

    serializer_class = AlertRuleSerializer

    @extend_schema(responses=AlertRuleSerializer(many=True))
    def get(self, request: Request) -> Response:
        rules_ = selectors.alert_rules_for_user(user=request_user(request))
        return Response(AlertRuleSerializer(rules_, many=True).data)

    @extend_schema(request=AlertRuleSerializer, responses={201: AlertRuleSerializer})
    def post(self, request: Request) -> Response:
        user = request_user(request)
        serializer = AlertRuleSerializer(data=request.data, owner=user)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "channel" not in data:
            data["channel"] = selectors.default_channel(user_id=user.pk)
        rule = services.alert_rule_save(rule=AlertRule(user=user, **data))
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class AlertRuleView(APIView):
    """A user's alert rules; each user sees and edits only their own."""

    queryset = AlertRule.objects.none()  # the model, for the schema's path parameter
    serializer_class = AlertRuleSerializer

    def _rule(self, request: Request, pk: str) -> AlertRule:
        return get_object_or_404(selectors.alert_rules_for_user(user=request_user(request)), pk=pk)

    def get(self, request: Request, pk: str) -> Response:
        return Response(AlertRuleSerializer(self._rule(request, pk)).data)

    def put(self, request: Request, pk: str) -> Response:
        return self._update(request, pk, partial=False)

    def patch(self, request: Request, pk: str) -> Response:
        return self._update(request, pk, partial=True)

    def _update(self, request: Request, pk: str, *, partial: bool) -> Response:
        rule = self._rule(request, pk)
        serializer = AlertRuleSerializer(
            rule, data=request.data, partial=partial, owner=request_user(request)
        )
        serializer.is_valid(raise_exception=True)
        changed = [f for f, v in serializer.validated_data.items() if getattr(rule, f) != v]
        for field, value in serializer.validated_data.items():
            setattr(rule, field, value)
        rule = services.alert_rule_save(rule=rule, changed=changed)
        return Response(AlertRuleSerializer(rule).data)

    def delete(self, request: Request, pk: str) -> Response:
        services.alert_rule_delete(rule=self._rule(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationChannelSerializer(serializers.ModelSerializer[NotificationChannel]):
    webhook_url = serializers.CharField(write_only=True, required=False, max_length=500)
    has_webhook = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = (
            "id",
            "name",
            "kind",
            "webhook_url",
            "has_webhook",
            "enabled",
            "disabled_reason",
            "created_at",
        )
        read_only_fields = ("disabled_reason", "created_at")

    def get_has_webhook(self, obj: NotificationChannel) -> bool:
        return bool(obj.webhook_url)


class ChannelTestSerializer(serializers.Serializer):
    sent = serializers.BooleanField()
    message_id = serializers.CharField(help_text="Discord's id of the posted message")


def _channel_save(
    serializer: NotificationChannelSerializer, channel: NotificationChannel
) -> NotificationChannel:
    data = dict(serializer.validated_data)
    webhook_url = data.pop("webhook_url", None)
    for field, value in data.items():
        setattr(channel, field, value)
    return services.notification_channel_save(channel=channel, webhook_url=webhook_url)


class NotificationChannelListView(APIView):
    """A user's Discord webhooks. The webhook URL is write-only: it holds the webhook's token."""

    serializer_class = NotificationChannelSerializer

    @extend_schema(responses=NotificationChannelSerializer(many=True))
    def get(self, request: Request) -> Response:
        channels = selectors.notification_channels_for_user(user=request_user(request))
        return Response(NotificationChannelSerializer(channels, many=True).data)

    @extend_schema(request=NotificationChannelSerializer, responses={201: NotificationChannelSerializer})
    def post(self, request: Request) -> Response:
        serializer = NotificationChannelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = _channel_save(serializer, NotificationChannel(user=request_user(request)))
        return Response(NotificationChannelSerializer(channel).data, status=status.HTTP_201_CREATED)


def _channel(request: Request, pk: str) -> NotificationChannel:
    return get_object_or_404(selectors.notification_channels_for_user(user=request_user(request)), pk=pk)


class NotificationChannelView(APIView):
    """A user's Discord webhooks. The webhook URL is write-only: it holds the webhook's token."""

    queryset = NotificationChannel.objects.none()  # the model, for the schema's path parameter
    serializer_class = NotificationChannelSerializer

    def get(self, request: Request, pk: str) -> Response:
        return Response(NotificationChannelSerializer(_channel(request, pk)).data)

    def put(self, request: Request, pk: str) -> Response:
        return self._update(request, pk, partial=False)

    def patch(self, request: Request, pk: str) -> Response:
        return self._update(request, pk, partial=True)

    def _update(self, request: Request, pk: str, *, partial: bool) -> Response:
        channel = _channel(request, pk)
        serializer = NotificationChannelSerializer(channel, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        return Response(NotificationChannelSerializer(_channel_save(serializer, channel)).data)

    def delete(self, request: Request, pk: str) -> Response:
        services.notification_channel_delete(channel=_channel(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationChannelTestView(APIView):
    queryset = NotificationChannel.objects.none()  # the model, for the schema's path parameter
    serializer_class = ChannelTestSerializer

    @extend_schema(request=None, responses=ChannelTestSerializer)
    def post(self, request: Request, pk: str) -> Response:
        """Posts a test message to the channel's webhook now (502 when Discord does not take it)."""
        message_id = services.notification_channel_test(channel=_channel(request, pk))
        return Response(ChannelTestSerializer({"sent": True, "message_id": message_id}).data)


class AlertEventSerializer(serializers.ModelSerializer[AlertEvent]):
    bias = serializers.SerializerMethodField()
    stages = serializers.SerializerMethodField(help_text="Each timeframe's MACD-V stage when it fired")
    diagnostics = serializers.SerializerMethodField(help_text="MACD-V diagnostics of its timeframe")

    class Meta:
        model = AlertEvent
        fields = (
            "id",
            "rule",
            "symbol",
            "timeframe",
            "bar_start",
            "label",
            "title",
            "value",
            "price",
            "direction",
            "bias",
            "stages",
            "diagnostics",
            "fired_at",
        )

    def get_bias(self, obj: AlertEvent) -> str | None:
        return obj.payload.get("bias")

    @extend_schema_field(serializers.DictField(child=serializers.ChoiceField(choices=MACDV_STAGES)))
    def get_stages(self, obj: AlertEvent) -> dict[str, str] | None:
        return obj.payload.get("stages")

    @extend_schema_field(DiagnosticsSerializer(allow_null=True))
    def get_diagnostics(self, obj: AlertEvent) -> DiagnosticsJson | None:
        return obj.payload.get("diagnostics")


class AlertEventListView(PaginatedListView):
    """The user's alert history, newest first, in cursor pages (`limit`, then follow `next`)."""

    serializer_class = AlertEventSerializer

    @extend_schema(responses=AlertEventSerializer(many=True))
    def get(self, request: Request) -> Response:
        return self.paginate(selectors.alert_events_for_user(user=request_user(request)), request)


class AlertEventView(APIView):
    """The user's alert history, newest first, in cursor pages (`limit`, then follow `next`)."""

    queryset = AlertEvent.objects.none()  # the model, for the schema's path parameter
    serializer_class = AlertEventSerializer

    def get(self, request: Request, pk: str) -> Response:
        events = selectors.alert_events_for_user(user=request_user(request))
        return Response(AlertEventSerializer(get_object_or_404(events, pk=pk)).data)


WALL_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$")


@extend_schema_field({"type": "string", "pattern": WALL_CLOCK_TIME.pattern, "example": "22:00"})
class WallClockTimeField(serializers.TimeField):
    """A time of day on the owner's wall clock (`HH:MM[:ss[.uuuuuu]]`, no offset): the zone is the
    settings' `timezone`. OpenAPI's `format: time` is RFC 3339's full-time, which needs an offset, so
    the schema states the pattern, and input is held to it: Django's parser would take `7:05` and
    drop an offset without a word."""

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str) or not WALL_CLOCK_TIME.fullmatch(value):
            raise serializers.ValidationError(
                "Give a time of day as HH:MM, HH:MM:SS or HH:MM:SS.ffffff, in the settings' time zone "
                "(no offset)."
            )
        return super().to_internal_value(value)


class SettingsSerializer(serializers.Serializer[Any]):
    """The caller's settings: what a GET shows, what a PATCH may change (any of them)."""

    timezone = serializers.CharField(
        max_length=64,
        required=False,
        help_text="IANA time zone name: alert messages (and the console) show times in it. Default UTC",
    )
    default_symbols = serializers.ListField(
        child=serializers.CharField(max_length=20),
        required=False,
        max_length=500,
        help_text="Instrument symbols the signals grid shows by default (GET /api/v1/signals)",
    )
    default_timeframes = serializers.ListField(
        child=serializers.ChoiceField(choices=Timeframe.values),
        required=False,
        max_length=len(Timeframe.values),
        help_text="Timeframes the signals grid shows by default",
    )
    default_channel = serializers.IntegerField(
        allow_null=True,
        required=False,
        help_text="Id of one of the caller's notification channels: a new alert rule made without a "
        "channel goes there",
    )
    quiet_hours_start = WallClockTimeField(
        allow_null=True,
        required=False,
        help_text="Alerts that fire from this time (in `timezone`) are held ...",
    )
    quiet_hours_end = WallClockTimeField(
        allow_null=True,
        required=False,
        help_text="... and delivered from this one; past midnight when before the start. Both or neither",
    )

    def validate_timezone(self, value: str) -> str:
        try:
            timezone_validate(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value


class SettingsView(APIView):
    """The caller's settings: time zone, default symbols and timeframes, default notification channel
    and alert quiet hours (docs/alerts.md, "User settings")."""

    serializer_class = SettingsSerializer

    @extend_schema(tags=["auth"], summary="The caller's settings", responses=SettingsSerializer)
    def get(self, request: Request) -> Response:
        return Response(SettingsSerializer(selectors.user_preferences(user_id=request_user(request).pk)).data)

    @extend_schema(
        tags=["auth"],
        summary="Change some of the caller's settings",
        request=SettingsSerializer,
        responses=SettingsSerializer,
    )
    def patch(self, request: Request) -> Response:
        serializer = SettingsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "timezone" in data:
            data["timezone_name"] = data.pop("timezone")
        if "default_channel" in data:
            data["default_channel_id"] = data.pop("default_channel")
        preferences = services.user_preferences_update(user=request_user(request), **data)
        return Response(SettingsSerializer(preferences).data)
