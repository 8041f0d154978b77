import os
import secrets
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from alerts.demo import alerts_demo_seed
from brokerage.demo import brokerage_demo_seed
from livermore.schedules import periodic_tasks_sync
from marketdata.demo import demo_seed, instruments_seed
from users.models import User
from users.roles import BACK_OFFICE, DEALER, ROLES, roles_sync

DEMO_OPERATOR_PREFIX = "demo-"


class Command(BaseCommand):
    help = (
        "Idempotent set-up: instruments, periodic jobs, the operator superuser, and in a demo deployment"
        " (LIVERMORE_DEMO, the development default) the simulated venues, the demo FIX LP session and its"
        " routing rule, and a demo desk: an operator per role, client groups and accounts with deposits,"
        " positions, a pending order, a deposit waiting for four-eyes approval and a price alert."
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
        roles_sync(
            apps
        )  # the role groups as the table has them (a migration made them; a flush empties them)
        self.operator_ensure()
        if settings.LIVERMORE_DEMO:
            self.demo_desk_seed()
        self.stdout.write("Seed complete.")

    def demo_desk_seed(self) -> None:
        operators = {role: self.demo_operator_ensure(role) for role in ROLES}
        accounts = brokerage_demo_seed(back_office=operators[BACK_OFFICE], dealer=operators[DEALER])
        alerts_demo_seed(user=User.objects.get(username="demo-alice"))
        if accounts:
            numbers = ", ".join(str(a.number) for a in accounts)
            self.stdout.write(f"Demo desk: client accounts {numbers}.")

    @transaction.atomic
    def demo_operator_ensure(self, role: str) -> User:
        """A staff user in the role's group, created once with a generated password shown once."""
        username = f"{DEMO_OPERATOR_PREFIX}{role.replace('_', '-')}"
        user = User.objects.filter(username=username).first()
        if user is not None:
            return user
        password = secrets.token_urlsafe(18)
        user = User.objects.create_user(username=username, password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        self.stdout.write(
            self.style.WARNING(f"Created {role} operator {username!r} with generated password: {password}")
        )
        return user

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
