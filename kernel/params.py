"""Query parameters checked, not guessed: an unknown filter value is a 400, never an empty list."""

from collections.abc import Iterable

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


def choice_param(request: Request, name: str, choices: Iterable[str]) -> str | None:
    """The value of query parameter `name` (None when absent or empty); 400 if not one of `choices`."""
    value = request.query_params.get(name)
    if not value:
        return None
    allowed = list(choices)
    if value not in allowed:
        raise ValidationError({name: [f"Must be one of: {', '.join(allowed)}."]})
    return value
