"""Third-party admin pages held to the console's rule: every action declares the permission it needs
(django-celery-beat's task actions need the right to change periodic tasks, django-axes' clean-up the
right to delete attempts, not just to see them; django-otp's device secret pages the right to change
devices)."""

from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.admin import requires


class CheckedPeriodicTaskAdmin(PeriodicTaskAdmin):
    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: Any) -> None:
        super().enable_tasks(request, queryset)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: Any) -> None:
        super().disable_tasks(request, queryset)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: Any) -> None:
        super().toggle_tasks(request, queryset)

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: Any) -> None:
        super().run_tasks(request, queryset)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, CheckedPeriodicTaskAdmin)


class CheckedAccessAttemptAdmin(AccessAttemptAdmin):
    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request: HttpRequest, queryset: Any) -> None:
        super().cleanup_expired_attempts(request, queryset)


if admin.site.is_registered(AccessAttempt):
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, CheckedAccessAttemptAdmin)


class CheckedTOTPDeviceAdmin(TOTPDeviceAdmin):
    """The device's secret (its otpauth URL and QR code) only for those who may change devices."""

    @requires("otp_totp.change_totpdevice")
    def config_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return super().config_view(request, pk)

    @requires("otp_totp.change_totpdevice")
    def qrcode_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return super().qrcode_view(request, pk)


if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)
    admin.site.register(TOTPDevice, CheckedTOTPDeviceAdmin)
