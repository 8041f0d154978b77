import os
import secrets
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from livermore.schedules import periodic_tasks_sync
from marketdata.demo import demo_seed, instruments_seed


class Command(BaseCommand):
    help = (
        "Idempotent set-up: instruments, periodic jobs, the operator superuser, and in a demo deployment"
        " (LIVERMORE_DEMO) the simulated venues, the demo FIX LP session and its routing rule."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.LIVERMORE_DEMO:
            demo_seed()
            if apps.is_installed("fix"):
                from fix.demo import fix_demo_seed

                fix_demo_seed()
        else:
            instruments_seed()
            self.stdout.write(
                "Live deployment (LIVERMORE_DEMO off): no simulated venue, demo FIX LP session or demo"
                " routing rule seeded; add the live venues in the admin."
            )
        periodic_tasks_sync()
        self.operator_ensure()
        self.stdout.write("Seed complete.")

    @transaction.atomic
    def operator_ensure(self) -> None:
        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "operator")
        if User.objects.filter(username=username).exists():
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(18)
        User.objects.create_superuser(
            username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password
        )
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created superuser {username!r} with generated password: {password}\n"
                    "It is shown once; change it in the admin or set DJANGO_SUPERUSER_PASSWORD next time."
                )
            )
        else:
            self.stdout.write(
                f"Created superuser {username!r} from DJANGO_SUPERUSER_* environment variables."
            )
