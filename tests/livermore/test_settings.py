import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.support.stack import ROOT

PROBE = "import django; django.setup(); print('started')"


def production_env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "JWT_SIGNING_KEY", "FIELD_ENCRYPTION_KEY"}
    }
    env.update(
        DJANGO_ENV="production",
        DJANGO_SETTINGS_MODULE="livermore.settings",
        SECRET_KEY=secrets.token_urlsafe(60),
        JWT_SIGNING_KEY=secrets.token_urlsafe(40),
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="desk.example.com",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["SECRET_KEY", "JWT_SIGNING_KEY", "FIELD_ENCRYPTION_KEY", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without(name: str) -> None:
    result = run([sys.executable, "-c", PROBE], production_env(**{name: ""}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr
    assert "started" not in result.stdout


def test_production_refuses_a_short_jwt_signing_key() -> None:
    result = run([sys.executable, "-c", PROBE], production_env(JWT_SIGNING_KEY="x" * 31))
    assert result.returncode != 0
    assert "JWT_SIGNING_KEY must be at least 32 bytes" in result.stderr


def test_production_refuses_a_short_secret_key() -> None:
    result = run([sys.executable, "-c", PROBE], production_env(SECRET_KEY="short-secret"))
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 bytes" in result.stderr


def test_production_refuses_a_malformed_field_encryption_key() -> None:
    result = run([sys.executable, "-c", PROBE], production_env(FIELD_ENCRYPTION_KEY="not-a-fernet-key"))
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY must be urlsafe-base64" in result.stderr


def test_production_refuses_debug() -> None:
    result = run([sys.executable, "-c", PROBE], production_env(DEBUG="true"))
    assert result.returncode != 0
    assert "DEBUG must be off in production" in result.stderr


def test_production_with_all_secrets_passes_the_deploy_check() -> None:
    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_secrets_are_generated_outside_the_repository_with_private_permissions() -> None:
    from django.conf import settings

    assert settings.DEV_SECRETS_FILE.exists()
    assert settings.DEV_SECRETS_FILE.stat().st_mode & 0o077 == 0
    assert not settings.DEV_SECRETS_FILE.resolve().is_relative_to(ROOT)
