"""Throttles beyond DRF's defaults: a per-user rate for one kind of write (order submission, portfolio
sync), set in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] under the view's `throttle_scope`."""

from typing import cast

from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView


class ScopedWriteThrottle(ScopedRateThrottle):
    """ScopedRateThrottle for writes only: reads of the same view pass."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)


def throttles_with(*extra: type[BaseThrottle]) -> list[type[BaseThrottle]]:
    """The default throttles plus `extra` (a view's throttle_classes replaces the defaults)."""
    defaults = cast("list[type[BaseThrottle]]", api_settings.DEFAULT_THROTTLE_CLASSES)
    return [*defaults, *extra]
