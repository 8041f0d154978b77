"""The risk role sets the kill switch's trading states."""

from django.db import migrations

from users.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0008_roles_device_admin"),
        ("brokerage", "0007_trading_states"),
    ]

    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
