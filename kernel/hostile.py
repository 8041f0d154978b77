"""NUL characters in a URL (the path or the query string, raw or %00) answered 400 in the error
shape before any view or filter sees them (PostgreSQL cannot store or compare one). JSON bodies are
checked by kernel.parsers.JSONParser."""

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from kernel.errors import error_body


def _has_nul(request: HttpRequest) -> bool:
    query = request.META.get("QUERY_STRING", "")
    return "\x00" in request.path or "\x00" in query or "%00" in query


class RejectNulMiddleware:
    """400 for a NUL character in the path or the query string (raw or %00)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return _refusal() if _has_nul(request) else self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _refusal() if _has_nul(request) else await self.get_response(request)


def _refusal() -> JsonResponse:
    return JsonResponse(error_body("invalid", "NUL characters are not allowed in the URL."), status=400)
