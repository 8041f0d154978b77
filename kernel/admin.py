"""Admin pieces shared by the apps."""

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


class ReadOnlyAdminMixin:
    """For a ModelAdmin of rows that change only through services (or a sync): list and view only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Any]):
    pass


ViewMethod = TypeVar("ViewMethod", bound=Callable[..., HttpResponse])


def requires(*permissions: str) -> Callable[[ViewMethod], ViewMethod]:
    """Declare the permission an admin page (a ModelAdmin view method) needs (any one of several):
    without it the page answers 403. The declaration is kept as `required_permission` (the permission
    table test reads it from every custom admin URL)."""

    def decorate(view: ViewMethod) -> ViewMethod:
        @functools.wraps(view)
        def checked(self: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not any(request.user.has_perm(p) for p in permissions):
                raise PermissionDenied
            return view(self, request, *args, **kwargs)

        checked.required_permission = permissions  # type: ignore[attr-defined]
        return cast(ViewMethod, checked)

    return decorate


def permission_check(permission: str) -> Callable[..., bool]:
    """A `has_<name>_permission` method for `@admin.action(permissions=["<name>"])`:
    `has_trade_permission = permission_check("brokerage.trade_for_client")`."""

    def check(self: Any, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(permission)

    check.required_permission = permission  # type: ignore[attr-defined]
    return check
