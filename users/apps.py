from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    label = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import schema, security  # noqa: F401  the API-key scheme for drf-spectacular; login-failure receiver
