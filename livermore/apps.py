import logging

from django.apps import AppConfig
from django.conf import settings

log = logging.getLogger("livermore.settings")


class LivermoreConfig(AppConfig):
    name = "livermore"

    def ready(self) -> None:
        for old, new in settings.LEGACY_ENV_USED:
            log.warning("environment variable %s is deprecated: set %s instead (docs/migration.md)", old, new)
