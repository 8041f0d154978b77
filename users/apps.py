from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    label = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import schema  # noqa: F401  registers the API-key scheme with drf-spectacular
