"""`manage.py otp_enrol USERNAME`: give a staff user an authenticator (TOTP) device and recovery
codes for the admin's two-factor login, shown once here (a QR code on the terminal)."""

import io
from typing import Any

import qrcode
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.errors import ServiceError
from users.models import User
from users.services import staff_otp_enrol


class Command(BaseCommand):
    help = "Enrol a staff user in admin two-factor login (replaces their device and recovery codes)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--no-qr", action="store_true", help="Print the otpauth:// URL only")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        try:
            enrolment = staff_otp_enrol(user=user)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if not options["no_qr"]:
            code = qrcode.QRCode(border=1)
            code.add_data(enrolment.config_url)
            out = io.StringIO()
            code.print_ascii(out=out, invert=True)
            self.stdout.write(out.getvalue())
        self.stdout.write(
            f"Scan the code, or add this URL to an authenticator app:\n{enrolment.config_url}\n"
        )
        self.stdout.write("Recovery codes (each works once; keep them offline, they are not shown again):")
        for recovery in enrolment.recovery_codes:
            self.stdout.write(f"  {recovery}")
