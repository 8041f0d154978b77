from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    label = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers, schema, security  # noqa: F401  model signal receivers (permissions version, login failures); the API-key scheme for drf-spectacular
