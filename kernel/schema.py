"""The OpenAPI schema as the contract a generated client relies on: cursor pages documented as pages
with their `cursor` and `limit` parameters, and the error responses every operation can give, in the
API's one error shape {"error": {"code", "message", "fields"}} (kernel/errors.py), 429 and 503 with
their Retry-After header."""

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import Direction
from rest_framework import permissions

from kernel.pagination import PaginatedListView

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Machine-readable, e.g. not_found",
                },
                "message": {"type": "string", "description": "Human-readable"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Field name to its messages (an object when nested); empty when none",
                },
            },
        }
    },
}


ERROR_DESCRIPTIONS = {
    "400": "Bad request: invalid input (fields name what is wrong)",
    "401": "Not authenticated, or the credentials are invalid or expired",
    "403": "Authenticated but not permitted",
    "404": "Not found (or not yours)",
    "409": "Conflict with the current state (or an Idempotency-Key reused for another request)",
    "422": "Understood but cannot be carried out (e.g. not enough free margin, market closed)",
    "429": "Too many requests; retry after the Retry-After header's seconds",
    "503": "A backing service is temporarily unavailable; retry after the Retry-After header's seconds",
}


# The answers that tell a client when to come back: 429 (throttled, locked out) and 503 (an outage).
RETRY_AFTER_CODES = frozenset({"429", "503"})
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}


class AutoSchema(SpectacularAutoSchema):
    def _is_list_view(self, serializer: Any = None) -> bool:
        if isinstance(self.view, PaginatedListView) and self.method == "GET":
            return True
        return bool(super()._is_list_view(serializer))

    def _error_codes(self) -> list[str]:
        # 401 everywhere: a forged or expired token is refused even where no login is needed, and
        # the token endpoints answer bad credentials with it.
        codes = ["400", "401"]
        view = self.view
        if not all(isinstance(p, permissions.AllowAny) for p in view.get_permissions()):
            codes.append("403")
        if "{" in self.path:
            codes.append("404")
        if self.method not in SAFE_METHODS:
            codes += ["409", "422"]
        if view.get_throttles():
            codes.append("429")
        codes.append("503")
        return codes

    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        component = ResolvedComponent(
            name="Error", type=ResolvedComponent.SCHEMA, schema=ERROR_SCHEMA, object="kernel.schema.Error"
        )
        self.registry.register_on_missing(component)
        error = component.ref
        for code in self._error_codes():
            response = responses.setdefault(
                code,
                {
                    "description": ERROR_DESCRIPTIONS[code],
                    "content": {"application/json": {"schema": error}},
                },
            )
            if code in RETRY_AFTER_CODES:
                response.setdefault("headers", {}).update(RETRY_AFTER_HEADER)
        return responses
