import logging

from django.apps import AppConfig
from django.conf import settings

log = logging.getLogger("livermore.settings")


def admin_site_secure() -> None:
    """With ADMIN_2FA_REQUIRED, the admin asks for a one-time code at login and refuses any session
    not verified by one (every admin view and the operator console pages, through admin_view)."""
    from django.contrib import admin
    from django_otp.admin import OTPAdminSite

    if settings.ADMIN_2FA_REQUIRED:
        admin.site.__class__ = OTPAdminSite


class LivermoreConfig(AppConfig):
    name = "livermore"

    def ready(self) -> None:
        for old, new in settings.LEGACY_ENV_USED:
            log.warning("environment variable %s is deprecated: set %s instead (docs/migration.md)", old, new)
        admin_site_secure()
