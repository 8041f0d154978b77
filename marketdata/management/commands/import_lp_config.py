"""`manage.py import_lp_config FILE`: the old broker's lp_config.json, each LP created as a disabled
venue with its symbols mapped (docs/migration.md)."""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.errors import ServiceError
from marketdata.services import lp_config_import


class Command(BaseCommand):
    help = "Import the old broker's lp_config.json (venues are created disabled)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["file"].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{options['file']}: unreadable: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise CommandError(f"{options['file']}:{exc.lineno}: malformed JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise CommandError(f"{options['file']}: not a JSON object")
        try:
            result = lp_config_import(config=data)
        except ServiceError as exc:
            raise CommandError(f"{options['file']}: {exc.message}") from exc
        self.stdout.write(
            f"venues: {len(result['created'])} created (disabled), {len(result['present'])} already present, "
            f"{len(result['errors'])} refused"
        )
        for line in result["notes"]:
            self.stdout.write(f"  note: {line}")
        for line in result["errors"]:
            self.stdout.write(f"  error: {line}")
