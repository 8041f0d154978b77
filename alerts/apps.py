from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class AlertsConfig(AppConfig):
    name = "alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  connects the model signal receivers (data versions)

        checks.register(system_webhook_check, checks.Tags.security)


def system_webhook_check(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """SYSTEM_NOTIFICATION_WEBHOOK_URL, when set, is a Discord webhook URL (the message never shows
    it: it holds the webhook's token)."""
    from alerts.services.channels import webhook_url_check
    from kernel.errors import ServiceError

    if not (url := settings.SYSTEM_NOTIFICATION_WEBHOOK_URL.strip()):
        return []
    try:
        webhook_url_check(url)
    except ServiceError as exc:
        return [checks.Error(f"SYSTEM_NOTIFICATION_WEBHOOK_URL: {exc.message}", id="alerts.E001")]
    return []
