from django.apps import AppConfig


class BrokerageConfig(AppConfig):
    name = "brokerage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  connects the model signal receivers (groups version)
