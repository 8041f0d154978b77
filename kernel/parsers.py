"""DRF's parsers, refusing with 400 a body carrying a NUL character in any key or string (PostgreSQL
cannot store one, nor compare with one: a lookup by such a value fails in the database), and a JSON
document nested deeper than MAX_JSON_DEPTH levels (deeper ones would exhaust the parser's or a
serializer's recursion)."""

from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_JSON_DEPTH = 32
NUL_REFUSED = "NUL characters are not allowed."


def json_problem(data: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a parsed JSON document is refused, or None. Iterative: the document may be very deep."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return NUL_REFUSED
        elif isinstance(value, Mapping | list):
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels is not allowed."
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for k, v in items:
                if isinstance(k, str) and "\x00" in k:
                    return NUL_REFUSED
                stack.append((v, depth + 1))
    return None


class _Refusing:
    """A parser that refuses with 400 what its `problem` finds in what it parsed."""

    def problem(self, parsed: Any) -> str | None:
        raise NotImplementedError

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)  # type: ignore[misc]
        problem = self.problem(parsed)
        if problem is not None:
            raise ParseError(problem)
        return parsed


class JSONParser(_Refusing, parsers.JSONParser):
    """DRF's JSON parser, refusing documents too deep or carrying NUL characters."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels is not allowed.") from None

    def problem(self, parsed: Any) -> str | None:
        return json_problem(parsed)


def _form_problem(data: Any) -> str | None:
    """Why a parsed form is refused, or None: a NUL character in a field's name or any of its values."""
    for key in data:
        if "\x00" in key or any(isinstance(v, str) and "\x00" in v for v in data.getlist(key)):
            return NUL_REFUSED
    return None


class FormParser(_Refusing, parsers.FormParser):
    """DRF's URL-encoded form parser, refusing NUL characters."""

    def problem(self, parsed: Any) -> str | None:
        return _form_problem(parsed)


class MultiPartParser(_Refusing, parsers.MultiPartParser):
    """DRF's multipart parser, refusing NUL characters in the form's fields (files are bytes)."""

    def problem(self, parsed: Any) -> str | None:
        return _form_problem(parsed.data)
