from rest_framework.pagination import CursorPagination


class NewestFirst(CursorPagination):
    """Cursor pages, newest (highest id) first: stable while rows are being added."""

    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"
