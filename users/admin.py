from typing import Any, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from kernel.admin import requires
from kernel.errors import ServiceError

from .models import ApiKey, AuditLog, User, UserSettings
from .services import api_key_issue, api_key_issue_check, audit_record


def _shown(value: Any) -> Any:
    """A form value as the audit log keeps it: text, or a list of texts for a choice of several."""
    if value is None:
        return None
    if isinstance(value, QuerySet | list | tuple):
        return [str(item) for item in value]
    return str(value)


class UserOwnedInline(admin.StackedInline[Any, Any]):
    """A one-to-one row of a user's, edited on the user's page: by those who may change users (the
    administrator role), seen by those who may see them."""

    can_delete = False
    max_num = 1

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("users.view_user") or self.has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("users.change_user")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class UserSettingsInline(UserOwnedInline):
    model = UserSettings
    fields = ("timezone", "quiet_hours_start", "quiet_hours_end")


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Administrators manage users and their roles; only a superuser makes or edits a superuser or
    grants single permissions (an administrator cannot lift themselves above the roles).

    The user's settings are inlines: this app's, then those settings.USER_ADMIN_INLINES names (the
    trading apps' per-user preferences, which this app cannot import)."""

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        if obj is None:
            return []
        return [UserSettingsInline, *(import_string(path) for path in settings.USER_ADMIN_INLINES)]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return fields
        return (*fields, "is_superuser", "user_permissions")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Audits the save (in the admin's transaction): the user's fields that changed, roles
        included, and each settings inline's new values; never a password."""
        super().save_related(request, form, formsets, change)
        details: dict[str, Any] = {
            "fields": sorted(name for name in form.changed_data if not name.startswith("password"))
        }
        if "groups" in form.changed_data:
            details["roles"] = sorted(group.name for group in form.instance.groups.all())
        for formset in formsets:
            changed = {
                name: _shown(sub.cleaned_data[name])
                for sub in formset.forms
                if sub.has_changed()
                for name in sub.changed_data
            }
            if changed:
                details[formset.prefix] = changed
        action = "user.change" if change else "user.create"
        audit_record(actor=cast(User, request.user), action=action, target=form.instance, details=details)

    @requires("users.change_user")
    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        return super().user_change_password(request, id, form_url)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_select_related = ("user",)
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        """A new key is for the operator themself unless api_key_issue_check lets them make one for
        the user chosen."""
        base = super().get_form(request, obj, change, **kwargs)
        actor = request.user

        class IssueChecked(base):  # type: ignore[valid-type,misc]
            def clean(self) -> dict[str, Any]:
                data: dict[str, Any] = super().clean()
                owner = data.get("user")
                if not change and owner is not None and isinstance(actor, User):
                    try:
                        api_key_issue_check(actor=actor, user=owner)
                    except ServiceError as exc:
                        self.add_error("user", exc.message)
                return data

        return IssueChecked

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        assert isinstance(request.user, User)
        key, raw = api_key_issue(user=obj.user, name=obj.name, actor=request.user)
        obj.pk, obj.prefix, obj.hashed = key.pk, key.prefix, key.hashed
        messages.warning(request, f"API key created. Copy it now, it is not shown again: {raw}")


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin[AuditLog]):
    list_display = ("created_at", "actor", "action", "object_type", "object_repr", "ip_address")
    list_select_related = ("actor",)
    list_filter = ("action", "object_type")
    search_fields = ("action", "object_repr", "object_id", "actor__username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False
