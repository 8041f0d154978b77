"""One error shape for the whole API: {"error": {"code", "message", "fields"}}."""

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ServiceError(Exception):
    """Raised by services for a request that is understood but cannot be carried out."""

    status_code: int = status.HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(
        self,
        code: str,
        message: str,
        *,
        fields: dict[str, list[str]] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or {}
        if status_code is not None:
            self.status_code = status_code


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


log = logging.getLogger(__name__)

# How long a client should wait before retrying a request refused by an outage (seconds).
OUTAGE_RETRY_AFTER_S = 5


def outage(exc: BaseException) -> str | None:
    """Which backing service an exception says is unavailable ("database", "redis"), or None."""
    if isinstance(exc, OperationalError | InterfaceError):
        return "database"
    if isinstance(exc, DatabaseError) and isinstance(exc.__cause__, OSError):
        return "database"
    if isinstance(exc, RedisError | ConnectionRefusedError):
        return "redis"
    return None


def unavailable_body(service: str) -> dict[str, Any]:
    return error_body("unavailable", f"The service is temporarily unavailable ({service}); retry shortly.")


class OutageMiddleware:
    """A database or Redis outage anywhere under the views (a plain Django view, or one DRF let
    through) answers 503 in the API's JSON error shape with Retry-After, never an HTML 500 page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        service = outage(exc)
        if service is None:
            return None
        log.warning(
            "%s %s: %s unavailable: %s: %s", request.method, request.path, service, type(exc).__name__, exc
        )
        response = JsonResponse(unavailable_body(service), status=503)
        response["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
        return response


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {k: _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [str(d) if not isinstance(d, dict | list) else _flatten(d) for d in detail]
    return [str(detail)]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    service = outage(exc)
    if service is not None:
        request = context.get("request")
        log.warning(
            "%s: %s unavailable: %s: %s", getattr(request, "path", "?"), service, type(exc).__name__, exc
        )
        return Response(
            unavailable_body(service),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, OverflowError):  # a date or number beyond what the computation can carry
        return Response(
            error_body("out_of_range", "A value in the request is out of range."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = (
            _flatten(exc.detail)
            if isinstance(exc.detail, dict)
            else {"non_field_errors": _flatten(exc.detail)}
        )
        response.data = error_body("invalid", "The request is not valid.", fields)
    elif isinstance(exc, exceptions.APIException):
        codes: Any = exc.get_codes()
        detail: Any = exc.detail
        if isinstance(detail, dict) and "detail" in detail:  # simplejwt: {"detail", "code", "messages"}
            codes, detail = codes["detail"], detail["detail"]
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(code, str(detail))
    return response
