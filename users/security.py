"""Brute-force lockout responses (django-axes) in the API's error shape."""

from typing import Any

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status

from kernel.errors import error_body

LOCKED_OUT_MESSAGE = "Too many failed login attempts. Try again later."


class LockedOut(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = LOCKED_OUT_MESSAGE
    default_code = "locked_out"


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: what a locked-out client gets from the admin login (and any other
    Django login form): 429 with the API error body."""
    response = JsonResponse(error_body("locked_out", LOCKED_OUT_MESSAGE), status=LockedOut.status_code)
    cool_off = get_cool_off(request)
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
