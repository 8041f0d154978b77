"""Console tables that update live: a page renders its tables once (templates/admin/_live_table.html)
and its script (templates/admin/_live.html) polls a JSON endpoint for the same tables every few
seconds. The server formats every cell, so the first render and the refreshes show the same text."""

from dataclasses import dataclass, field
from typing import Any

from django.http import JsonResponse
from django.utils import timezone

Cell = str | dict[str, str]


def link(text: Any, href: str) -> dict[str, str]:
    """A cell that links to another console page."""
    return {"text": str(text), "href": href}


def text(value: Any, *, empty: str = "–") -> str:
    return empty if value is None or value == "" else str(value)


@dataclass
class LiveTable:
    columns: tuple[str, ...]
    empty: str  # shown as the only row when there is none
    rows: list[list[Cell]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "empty": self.empty}


def live_response(tables: dict[str, LiveTable]) -> JsonResponse:
    """The JSON a live page polls: its tables by name and the time they were read."""
    return JsonResponse(
        {"at": timezone.now().isoformat(), "tables": {name: t.as_dict() for name, t in tables.items()}}
    )


def wants_json(request: Any) -> bool:
    return bool(request.GET.get("format") == "json")
