from django.apps import AppConfig


class FixConfig(AppConfig):
    """FIX 4.4 connectivity. Optional: its runtime needs the compiled `quickfix` package (the `fix`
    extra); models, admin and services import no quickfix so the web process runs without it."""

    name = "fix"
    verbose_name = "FIX connectivity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  connects the model signal receivers (routing version)
