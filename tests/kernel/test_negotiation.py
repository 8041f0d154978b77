"""The API's content negotiation answers as DRF's does, whatever the request accepts."""

import pytest
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from kernel.negotiation import ContentNegotiation

RENDERERS = [JSONRenderer(), BrowsableAPIRenderer()]


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/api/v1/accounts", None),
        ("/api/v1/accounts", "*/*"),
        ("/api/v1/accounts", "application/json"),
        ("/api/v1/accounts", "application/json; indent=4"),
        ("/api/v1/accounts", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("/api/v1/accounts", "*/*; indent=2"),
        ("/api/v1/accounts?format=api", "*/*"),
        ("/api/v1/accounts?format=json", None),
        ("/api/v1/accounts?format=", "*/*"),
    ],
)
def test_it_picks_the_renderer_drf_picks(path: str, accept: str | None) -> None:
    django_request = APIRequestFactory().get(path)
    if accept is not None:
        django_request.META["HTTP_ACCEPT"] = accept
    request = Request(django_request)
    ours = ContentNegotiation().select_renderer(request, RENDERERS)
    drf = DefaultContentNegotiation().select_renderer(request, RENDERERS)
    assert (type(ours[0]), ours[1]) == (type(drf[0]), drf[1])


def test_it_refuses_what_no_renderer_gives() -> None:
    request = Request(APIRequestFactory().get("/api/v1/accounts", HTTP_ACCEPT="image/png"))
    with pytest.raises(NotAcceptable):
        ContentNegotiation().select_renderer(request, RENDERERS)


def test_a_format_suffix_filters_the_renderers() -> None:
    request = Request(APIRequestFactory().get("/api/v1/accounts"))
    renderer, media_type = ContentNegotiation().select_renderer(request, RENDERERS, format_suffix="api")
    assert isinstance(renderer, BrowsableAPIRenderer) and media_type == "text/html"
