"""Hostile input is answered 4xx in the error shape, never 500."""

import base64
from urllib.parse import quote, urlencode

import pytest
from rest_framework.test import APIClient

from brokerage.models import TradingAccount
from marketdata.demo import demo_seed

pytestmark = pytest.mark.django_db

NESTED = "[" * 5000 + "]" * 5000
SHALLOW_ENOUGH = '{"a":' * 40 + "1" + "}" * 40


def cursor(position: str) -> str:
    return quote(base64.b64encode(f"p={position}".encode()).decode())


@pytest.fixture
def api(alice_api: APIClient) -> APIClient:
    demo_seed()
    alice_api.raise_request_exception = False
    return alice_api


@pytest.mark.parametrize("body", [NESTED, SHALLOW_ENOUGH])
@pytest.mark.parametrize("path", ["/api/v1/accounts/{n}/orders", "/api/v1/alert-rules", "/api/v1/api-keys"])
def test_deeply_nested_json_is_refused(
    api: APIClient, alice_account: TradingAccount, path: str, body: str
) -> None:
    response = api.post(path.format(n=alice_account.number), data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_deeply_nested_json_is_refused_anonymously() -> None:
    anonymous = APIClient()
    response = anonymous.post("/api/v1/auth/token", data=NESTED, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "body",
    ['{"name":"a\\u0000b","kind":"discord","webhook_url":"https://discord.com/api/webhooks/1/a"}'],
)
def test_a_nul_in_a_body_is_refused(api: APIClient, body: str) -> None:
    response = api.post("/api/v1/alert-channels", data=body, content_type="application/json")
    assert response.status_code == 400


def test_a_nul_anywhere_in_json_is_refused(api: APIClient) -> None:
    body = '{"name":"x","kind":"discord","webhook_url":"https://discord.com/api/webhooks/1/a","\\u0000":1}'
    response = api.post("/api/v1/alert-channels", data=body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
@pytest.mark.parametrize("field", [("symbol", "EUR\x00USD"), ("name\x00", "x")])
def test_a_nul_in_a_form_is_refused(api: APIClient, content_type: str, field: tuple[str, str]) -> None:
    """A form's value or field name with a NUL: a lookup by it (the rule's symbol) would fail in the
    database."""
    data = dict([("timeframe", "1h"), ("condition", "less_than"), ("threshold", "1"), field])
    if content_type == "multipart/form-data":
        response = api.post("/api/v1/alert-rules", data=data, format="multipart")
    else:
        response = api.post("/api/v1/alert-rules", data=urlencode(data), content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/ticks/EUR%00USD",
        "/api/v1/candles/EUR%00USD?tf=1m",
        "/api/v1/accounts/{n}/orders?status=a%00b",
        "/api/v1/instruments?search=a%00b",
        "/api/v1/alert-events?cursor=%00",
    ],
)
def test_a_nul_in_a_path_or_a_query_is_refused(
    api: APIClient, alice_account: TradingAccount, url: str
) -> None:
    response = api.get(url.format(n=alice_account.number))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("value", ["garbage", cursor("abc"), cursor("9" * 30), cursor("-1")])
@pytest.mark.parametrize("path", ["orders", "positions", "deals", "ledger"])
def test_a_tampered_cursor_is_refused(
    api: APIClient, alice_account: TradingAccount, path: str, value: str
) -> None:
    response = api.get(f"/api/v1/accounts/{alice_account.number}/{path}?cursor={value}")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"cursor": ["Invalid cursor."]}


@pytest.mark.parametrize(
    "query",
    [
        "tf=1m&end=0001-01-01T00:00:00Z",
        "tf=1m&start=0001-01-01T00:00:00Z",
        "tf=1m&start=9999-12-31T23:59:59Z",
        "tf=1m&end=9999-12-31T23:59:59Z",
    ],
)
def test_dates_near_year_1_and_year_9999_are_no_server_error(api: APIClient, query: str) -> None:
    for path in ("candles", "ticks"):
        assert api.get(f"/api/v1/{path}/EURUSD?{query}").status_code < 500


def test_a_malformed_webhook_url_is_refused(api: APIClient) -> None:
    body = {"name": "x", "kind": "discord", "webhook_url": "https://["}
    response = api.post("/api/v1/alert-channels", body, format="json")
    assert response.status_code == 400
    assert "webhook_url" in response.json()["error"]["fields"]


@pytest.mark.parametrize("path", ["orders", "positions"])
def test_an_unknown_filter_value_is_refused(api: APIClient, alice_account: TradingAccount, path: str) -> None:
    response = api.get(f"/api/v1/accounts/{alice_account.number}/{path}?status=nonsense")
    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]
