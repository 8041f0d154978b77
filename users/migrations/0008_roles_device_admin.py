"""The administrator role also manages staff sign-in devices (TOTP and recovery codes)."""

from django.db import migrations

from users.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0007_auditlog_ip_address"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
        ("fix", "0005_session_next_seqnums"),
        ("marketdata", "0009_candle_import_suspect"),
        ("alerts", "0010_system_notifications"),
    ]

    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
