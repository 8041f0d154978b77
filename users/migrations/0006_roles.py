"""The operator roles (users/roles.py) as Django groups with their permissions."""

from typing import Any

from django.db import migrations

from users.roles import ROLES, roles_migrate


def drop_roles(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0005_apikey_issue_for_others"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("brokerage", "0006_cash_operations_and_operator_permissions"),
        ("marketdata", "0008_backfill_job"),
        ("alerts", "0008_indicatorvalue_view_signals_permission"),
        ("fix", "0003_expire_time_and_cancel_reason"),
        ("portfolio", "0002_valuation_fills_prices"),
    ]

    operations = [migrations.RunPython(roles_migrate, drop_roles)]
