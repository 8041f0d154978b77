import io
import json
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_schema_generates_without_warnings() -> None:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    assert '"/api/v1/auth/token"' in out.getvalue()


def test_swagger_ui_loads_its_assets_from_our_static_files(client: Client) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert any("swagger-ui-bundle" in a for a in assets)
    for asset in assets:
        assert asset.startswith("/static/"), asset
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert b"".join(response.streaming_content if response.streaming else [response.content])


def _schema() -> dict[str, Any]:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    schema: dict[str, Any] = json.loads(out.getvalue())
    return schema


def _ok(operation: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return body


def test_paged_lists_are_documented_as_cursor_pages_and_the_account_list_as_a_list() -> None:
    schema = _schema()
    paths, components = schema["paths"], schema["components"]["schemas"]
    for path, item in (
        ("/api/v1/accounts/{number}/orders", "Order"),
        ("/api/v1/accounts/{number}/positions", "Position"),
        ("/api/v1/accounts/{number}/deals", "Deal"),
        ("/api/v1/accounts/{number}/ledger", "Posting"),
        ("/api/v1/alert-events", "AlertEvent"),
        ("/api/v1/backoffice/cash-operations", "CashOperation"),
    ):
        operation = paths[path]["get"]
        assert {"cursor", "limit"} <= {p["name"] for p in operation["parameters"]}, path
        page = components[_ok(operation)["$ref"].rsplit("/", 1)[1]]
        assert set(page["properties"]) == {"next", "previous", "results"}, path
        assert page["properties"]["results"]["items"]["$ref"] == f"#/components/schemas/{item}", path
    assert _ok(paths["/api/v1/accounts"]["get"]) == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Account"},
    }


def test_an_alert_rule_reads_every_status_and_accepts_only_active_or_paused() -> None:
    components = _schema()["components"]["schemas"]

    def statuses(component: str) -> list[str]:
        ref = components[component]["properties"]["status"]["allOf"][0]["$ref"]
        values: list[str] = components[ref.rsplit("/", 1)[1]]["enum"]
        return values

    assert statuses("AlertRule") == ["active", "paused", "triggered", "expired", "stopped"]
    assert statuses("AlertRuleRequest") == statuses("PatchedAlertRuleRequest") == ["active", "paused"]


def test_error_responses_are_documented_in_the_error_shape() -> None:
    schema = _schema()
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message", "fields"]
    place = schema["paths"]["/api/v1/accounts/{number}/orders"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "422", "429", "503"} <= set(place)
    for code in ("400", "401", "403", "404", "409", "422", "429", "503"):
        assert place[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    token = schema["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert {"400", "401", "429", "503"} <= set(token)


def test_429_and_503_document_their_retry_after_header() -> None:
    paths = _schema()["paths"]
    answers = [
        response
        for operations in paths.values()
        for operation in operations.values()
        if isinstance(operation, dict) and "responses" in operation
        for code, response in operation["responses"].items()
        if code in ("429", "503")
    ]
    assert answers
    for response in answers:
        assert response["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 0}
    place = paths["/api/v1/accounts/{number}/orders"]["post"]["responses"]
    assert "headers" not in place["400"] and "Retry-After" in place["429"]["headers"]
