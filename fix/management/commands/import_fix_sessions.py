"""`manage.py import_fix_sessions FILE`: the old FIX gateway's sessions.json (fix/config/), each session
created disabled, its password stored encrypted and never printed (docs/migration.md)."""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fix.services import fix_sessions_import


class Command(BaseCommand):
    help = "Import the old FIX gateway's sessions.json (sessions are created disabled)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["file"].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{options['file']}: unreadable: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise CommandError(f"{options['file']}:{exc.lineno}: malformed JSON: {exc.msg}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("sessions"), list):
            raise CommandError(f'{options["file"]}: expected {{"sessions": [...]}}')
        result = fix_sessions_import(entries=data["sessions"])
        self.stdout.write(
            f"sessions: {len(result['created'])} created (disabled), "
            f"{len(result['present'])} already present, {len(result['errors'])} refused"
        )
        for name in result["created"]:
            self.stdout.write(f"  created {name}: set its next sequence numbers, then enable it at cut-over")
        for line in result["notes"]:
            self.stdout.write(f"  note: {line}")
        for line in result["errors"]:
            self.stdout.write(f"  error: {line}")
