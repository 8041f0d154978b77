from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class NewestFirst(CursorPagination):
    """Cursor pages, newest (highest id) first: stable while rows are being added."""

    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"


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
