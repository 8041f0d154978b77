"""DRF's content negotiation, answering at once for a request that accepts anything."""

from collections.abc import Iterable

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class ContentNegotiation(DefaultContentNegotiation):
    """A request with no Accept header or `Accept: */*` (what bots and HTTP libraries send) and no
    query string (so no format override) gets the view's first renderer with its media type, as
    DRF's negotiation would answer, without parsing the header and ranking every renderer against it
    on each request."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        meta = request.META
        first = next(iter(renderers), None)
        if (
            first is not None
            and format_suffix is None
            and not meta.get("QUERY_STRING")
            and meta.get("HTTP_ACCEPT", "*/*") == "*/*"
            and "*" not in first.media_type
        ):
            return first, first.media_type
        answer: tuple[BaseRenderer, str] = super().select_renderer(request, renderers, format_suffix)
        return answer
