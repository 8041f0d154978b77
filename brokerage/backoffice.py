"""The back-office REST API under /api/v1/backoffice/: opening accounts, cash operations with
four-eyes (approve, reject), status, group and leverage changes, client password resets, the kill
switch's trading states. Every view
declares the permission it needs (`required_permission`, checked with is_staff by StaffPermission);
the services check it again and audit the operator. Cash writes take an Idempotency-Key."""

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kernel.pagination import NewestFirst, PaginatedListView
from marketdata.models import Instrument, Venue
from users.authentication import request_user
from users.idempotency import idempotent
from users.models import User

from . import services
from .api import AccountSerializer
from .models import (
    AccountStatus,
    CashOperation,
    CashOperationKind,
    CashStatus,
    ClientGroup,
    PaymentMethod,
    TradingAccount,
    TradingScope,
    TradingState,
    TradingStatus,
)
from .selectors import trading_state_rows

IDEMPOTENCY = OpenApiParameter("Idempotency-Key", location=OpenApiParameter.HEADER, required=False)


class StaffPermission(permissions.BasePermission):
    """Staff holding the view's `required_permission`; is_staff alone is not enough."""

    message = "You do not have permission to do this."
    code = "permission_denied"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        needed: str = view.required_permission  # type: ignore[attr-defined]
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm(needed))


class BackOfficeView(APIView):
    permission_classes = [permissions.IsAuthenticated, StaffPermission]
    required_permission: str


def _account(number: int) -> TradingAccount:
    return get_object_or_404(TradingAccount.objects.select_related("group", "owner"), number=number)


# -- serializers -------------------------------------------------------------------------------------


class AccountOpenSerializer(serializers.Serializer[Any]):
    owner = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.filter(is_staff=False), help_text="A client's username."
    )
    group = serializers.SlugRelatedField(slug_field="name", queryset=ClientGroup.objects.all())
    currency = serializers.CharField(max_length=10, required=False, help_text="Must be the group's.")
    leverage = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="Overrides the group's leverage."
    )


class BackOfficeAccountSerializer(AccountSerializer):
    leverage = serializers.IntegerField(source="effective_leverage")
    owner = serializers.CharField(source="owner.username")

    class Meta(AccountSerializer.Meta):
        fields = (*AccountSerializer.Meta.fields, "owner")


class CashRequestSerializer(serializers.Serializer[Any]):
    amount = serializers.DecimalField(
        max_digits=24, decimal_places=8, help_text="Adjustments may be negative; the rest positive."
    )
    method = serializers.ChoiceField(choices=PaymentMethod.choices, default=PaymentMethod.MANUAL)
    external_ref = serializers.CharField(
        max_length=128, required=False, default="", allow_blank=True, help_text="Unique per method."
    )
    comment = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class AdjustmentSerializer(CashRequestSerializer):
    comment = serializers.CharField(max_length=255)
    override = serializers.BooleanField(
        default=False,
        help_text="Below zero balance or free margin; needs brokerage.override_negative_adjustment.",
    )


class CashOperationSerializer(serializers.ModelSerializer[CashOperation]):
    account = serializers.IntegerField(source="account.number")
    created_by = serializers.CharField(source="created_by.username")
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True, default=None)

    class Meta:
        model = CashOperation
        fields = (
            "id",
            "account",
            "kind",
            "amount",
            "currency",
            "method",
            "external_ref",
            "comment",
            "status",
            "override",
            "created_by",
            "created_at",
            "decided_by",
            "decided_at",
            "decision_comment",
            "applied_at",
            "transaction",
            "hold",
        )


class DecisionSerializer(serializers.Serializer[Any]):
    comment = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class StatusSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=AccountStatus.choices)
    reason = serializers.CharField(max_length=255)


class GroupSerializer(serializers.Serializer[Any]):
    group = serializers.SlugRelatedField(slug_field="name", queryset=ClientGroup.objects.all())


class LeverageSerializer(serializers.Serializer[Any]):
    leverage = serializers.IntegerField(min_value=1, allow_null=True, help_text="null: the group's.")


class PasswordResetSerializer(serializers.Serializer[Any]):
    password = serializers.CharField(write_only=True, min_length=1, style={"input_type": "password"})


class TradingStateSerializer(serializers.ModelSerializer[TradingState]):
    venue = serializers.CharField(source="venue.code", allow_null=True, default=None)
    instrument = serializers.CharField(source="instrument.symbol", allow_null=True, default=None)
    group = serializers.CharField(source="group.name", allow_null=True, default=None)
    set_by = serializers.CharField(source="set_by.username", allow_null=True, default=None)

    class Meta:
        model = TradingState
        fields = (
            "id",
            "scope",
            "venue",
            "instrument",
            "group",
            "state",
            "reason",
            "source",
            "auto_resume",
            "set_by",
            "set_at",
        )


class TradingStateSetSerializer(serializers.Serializer[Any]):
    scope = serializers.ChoiceField(choices=TradingScope.choices)
    venue = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Venue.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="The venue's code (scope venue only).",
    )
    instrument = serializers.SlugRelatedField(
        slug_field="symbol",
        queryset=Instrument.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="The symbol (scope instrument only).",
    )
    group = serializers.SlugRelatedField(
        slug_field="name",
        queryset=ClientGroup.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="The client group's name (scope group only).",
    )
    state = serializers.ChoiceField(
        choices=TradingStatus.choices, help_text="active clears the scope's state."
    )
    reason = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


# -- views -------------------------------------------------------------------------------------------


class AccountOpenView(BackOfficeView):
    required_permission = "brokerage.open_account"
    serializer_class = AccountOpenSerializer

    @extend_schema(
        tags=["back office"],
        summary="Open an account for a client (owner, group, currency, leverage)",
        request=AccountOpenSerializer,
        responses={201: BackOfficeAccountSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = AccountOpenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = services.client_account_open(**serializer.validated_data, actor=request_user(request))
        account = _account(account.number)
        return Response(BackOfficeAccountSerializer(account).data, status=status.HTTP_201_CREATED)


class CashView(BackOfficeView):
    kind: str
    serializer_class: type[CashRequestSerializer] = CashRequestSerializer

    @idempotent
    def post(self, request: Request, number: int) -> Response:
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        operation = services.cash_operation_create(
            account=_account(number), kind=self.kind, actor=request_user(request), **serializer.validated_data
        )
        pending = operation.status == CashStatus.PENDING
        return Response(
            CashOperationSerializer(operation).data,
            status=status.HTTP_202_ACCEPTED if pending else status.HTTP_201_CREATED,
        )


def _cash_schema(what: str) -> Any:
    return extend_schema(
        tags=["back office"],
        summary=f"{what} (Idempotency-Key)",
        description="201: applied. 202: above the four-eyes threshold, pending a second operator "
        "(a pending withdrawal holds its funds).",
        parameters=[IDEMPOTENCY],
        responses={201: CashOperationSerializer, 202: CashOperationSerializer},
    )


@_cash_schema("Deposit to a client account")
class DepositView(CashView):
    kind = CashOperationKind.DEPOSIT
    required_permission = "brokerage.deposit"


@_cash_schema("Withdraw from a client account")
class WithdrawView(CashView):
    kind = CashOperationKind.WITHDRAWAL
    required_permission = "brokerage.withdraw"


@_cash_schema("Adjust a client's balance (a comment is required)")
class AdjustView(CashView):
    kind = CashOperationKind.ADJUSTMENT
    required_permission = "brokerage.adjust"
    serializer_class = AdjustmentSerializer


@_cash_schema("Credit a bonus")
class BonusView(CashView):
    kind = CashOperationKind.BONUS
    required_permission = "brokerage.bonus"


class CashOperationListView(BackOfficeView, PaginatedListView):
    required_permission = "brokerage.view_cashoperation"
    serializer_class = CashOperationSerializer
    pagination_class = NewestFirst

    @extend_schema(
        tags=["back office"],
        summary="Cash operations, newest first (e.g. ?status=pending: the four-eyes queue)",
        parameters=[
            OpenApiParameter("status", enum=CashStatus.values),
            OpenApiParameter("account", int),
        ],
    )
    def get(self, request: Request) -> Response:
        operations: QuerySet[CashOperation] = CashOperation.objects.select_related(
            "account", "created_by", "decided_by"
        )
        if request.query_params.get("status"):
            operations = operations.filter(status=request.query_params["status"])
        if (account := request.query_params.get("account", "")).isdigit():
            operations = operations.filter(account__number=int(account))
        return self.paginate(operations, request)


class CashDecisionView(BackOfficeView):
    required_permission = "brokerage.approve_cash"
    serializer_class = DecisionSerializer
    approve: bool

    @idempotent
    def post(self, request: Request, operation_id: int) -> Response:
        serializer = DecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        operation = get_object_or_404(CashOperation.objects.select_related("account"), pk=operation_id)
        decide = services.cash_operation_approve if self.approve else services.cash_operation_reject
        operation = decide(operation=operation, actor=request_user(request), **serializer.validated_data)
        return Response(CashOperationSerializer(operation).data)


@extend_schema(
    tags=["back office"],
    summary="Approve a pending cash operation (not its maker's): it is applied now",
    request=DecisionSerializer,
    responses=CashOperationSerializer,
    parameters=[IDEMPOTENCY],
)
class CashApproveView(CashDecisionView):
    approve = True


@extend_schema(
    tags=["back office"],
    summary="Reject a pending cash operation: a held withdrawal's funds return to the account",
    request=DecisionSerializer,
    responses=CashOperationSerializer,
    parameters=[IDEMPOTENCY],
)
class CashRejectView(CashDecisionView):
    approve = False


class AccountStatusView(BackOfficeView):
    required_permission = "brokerage.change_conditions"
    serializer_class = StatusSerializer

    @extend_schema(
        tags=["back office"],
        summary="Set an account active, close-only or disabled (with a reason)",
        request=StatusSerializer,
        responses=BackOfficeAccountSerializer,
    )
    def post(self, request: Request, number: int) -> Response:
        serializer = StatusSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = _account(number)
        services.account_status_set(account=account, actor=request_user(request), **serializer.validated_data)
        return Response(BackOfficeAccountSerializer(_account(number)).data)


class AccountGroupView(BackOfficeView):
    required_permission = "brokerage.change_conditions"
    serializer_class = GroupSerializer

    @extend_schema(
        tags=["back office"],
        summary="Move an account to another group of its currency (open positions re-margined)",
        request=GroupSerializer,
        responses=BackOfficeAccountSerializer,
    )
    def post(self, request: Request, number: int) -> Response:
        serializer = GroupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = _account(number)
        services.account_group_change(
            account=account, group=serializer.validated_data["group"], actor=request_user(request)
        )
        return Response(BackOfficeAccountSerializer(_account(number)).data)


class AccountLeverageView(BackOfficeView):
    required_permission = "brokerage.change_conditions"
    serializer_class = LeverageSerializer

    @extend_schema(
        tags=["back office"],
        summary="Override an account's leverage (null: back to the group's)",
        request=LeverageSerializer,
        responses=BackOfficeAccountSerializer,
    )
    def post(self, request: Request, number: int) -> Response:
        serializer = LeverageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = _account(number)
        services.account_leverage_set(
            account=account, leverage=serializer.validated_data["leverage"], actor=request_user(request)
        )
        return Response(BackOfficeAccountSerializer(_account(number)).data)


class PasswordResetView(BackOfficeView):
    required_permission = "brokerage.reset_client_password"
    serializer_class = PasswordResetSerializer

    @extend_schema(
        tags=["back office"],
        summary="Set a client's new password (the account's owner); their API sessions are revoked",
        request=PasswordResetSerializer,
        responses={204: None},
    )
    def post(self, request: Request, number: int) -> Response:
        serializer = PasswordResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.client_password_reset(
            client=_account(number).owner,
            password=serializer.validated_data["password"],
            actor=request_user(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TradingStateView(BackOfficeView):
    serializer_class = TradingStateSerializer

    @property
    def required_permission(self) -> str:  # type: ignore[override]
        write = self.request.method not in permissions.SAFE_METHODS
        return "brokerage.set_trading_state" if write else "brokerage.view_tradingstate"

    @extend_schema(
        tags=["back office"],
        summary="The kill switch: the trading state of every scope that has one",
        responses=TradingStateSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return Response(TradingStateSerializer(trading_state_rows(), many=True).data)

    @extend_schema(
        tags=["back office"],
        summary="Set (or, with active, clear) the trading state of a scope: global, a venue, an "
        "instrument or a client group",
        request=TradingStateSetSerializer,
        responses=TradingStateSerializer,
    )
    def post(self, request: Request) -> Response:
        serializer = TradingStateSetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = services.trading_state_set(**serializer.validated_data, actor=request_user(request))
        return Response(TradingStateSerializer(trading_state_rows().get(pk=row.pk)).data)
