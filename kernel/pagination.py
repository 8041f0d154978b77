from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# PostgreSQL's bigint: a cursor position beyond it cannot be compared with an id.
MAX_ID = 2**63 - 1


class NewestFirst(CursorPagination):
    """Cursor pages, newest (highest id) first: stable while rows are being added. A tampered cursor
    (undecodable, or a position that is not an id) is a 400."""

    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            cursor: Cursor | None = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: ["Invalid cursor."]}) from None
        ordering = (self.ordering,) if isinstance(self.ordering, str) else tuple(self.ordering)
        if cursor is not None and cursor.position is not None and ordering[0].lstrip("-") == "id":
            position: Any = cursor.position
            if (
                not (isinstance(position, str) and position.isascii() and position.isdigit())
                or int(position) > MAX_ID
            ):
                raise ValidationError({self.cursor_query_param: ["Invalid cursor."]})
        return cursor


# An APIView whose `get` renders cursor pages of `serializer_class` (its output serializer). No
# docstring: the schema would take it as every subclass's description.
class PaginatedListView(APIView):
    pagination_class = NewestFirst

    def paginate(self, queryset: QuerySet[Any], request: Request, **context: Any) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        assert page is not None
        return paginator.get_paginated_response(
            self.serializer_class(page, many=True, context=context).data  # type: ignore[attr-defined]
        )
