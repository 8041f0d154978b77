"""The replaced systems' environment variable names: read when the new name is unset, reported once at
start as deprecated, their values never printed."""

import json
import os
import secrets
import subprocess
import sys

from tests.support.stack import ROOT

PROBE = """
import json, os, django
django.setup()
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "db": [db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]],
    "env": settings.DJANGO_ENV,
    "webhook": settings.SYSTEM_NOTIFICATION_WEBHOOK_URL,
    "oanda": os.environ.get("OANDA_TOKEN"),
    "coinbase": os.environ.get("COINBASE_API_KEY_NAME"),
    "host": os.environ.get("HOST"),
    "port": os.environ.get("PORT"),
    "log_file": settings.LOG_FILE,
    "slow_ms": settings.LOG_SLOW_MS,
    "level": settings.LOG_LEVEL,
}))
"""
WEBHOOK_TOKEN = secrets.token_urlsafe(24)  # planted, made at test time
WEBHOOK = f"https://discord.com/api/webhooks/1234567890/{WEBHOOK_TOKEN}"
LEGACY = {
    "DATABASE_HOST": "db.internal",
    "DATABASE_PORT": "6543",
    "LIVERMORE_DATABASE_NAME": "livermore_old",
    "DATABASE_LIVERMORE_USERNAME": "broker",
    "DATABASE_LIVERMORE_PASSWORD": "p@ss:w/rd-secret",
    "DISCORD_LIVERMORE_BOT": WEBHOOK,
    "OANDA_API_KEY": "oanda-token-secret",
    "Coinbase_ApiKeyId": "organizations/abc/apiKeys/def",
    "API_HOST": "0.0.0.0",
    "API_PORT": "3001",
    "LOG_LEVEL": "verbose",
    "LOG_FILE_ENABLED": "true",
    "LOG_PERF_ENABLED": "true",
    "NODE_ENV": "development",
}
NEW_NAMES = {
    "DATABASE_URL",
    "DJANGO_ENV",
    "SYSTEM_NOTIFICATION_WEBHOOK_URL",
    "OANDA_TOKEN",
    "COINBASE_API_KEY_NAME",
    "COINBASE_PRIVATE_KEY_PEM",
    "HOST",
    "PORT",
    "LOG_FILE",
    "LOG_SLOW_MS",
}


def probe(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in NEW_NAMES and k != "LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "livermore.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_old_names_configure_livermore_when_the_new_ones_are_unset() -> None:
    result = probe(**LEGACY)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["db"] == ["db.internal", 6543, "livermore_old", "broker", "p@ss:w/rd-secret"]
    assert seen["env"] == "development"
    assert seen["webhook"] == WEBHOOK
    assert (seen["oanda"], seen["coinbase"]) == ("oanda-token-secret", "organizations/abc/apiKeys/def")
    assert (seen["host"], seen["port"]) == ("0.0.0.0", "3001")
    assert seen["log_file"].endswith("var/log/livermore.log") and seen["slow_ms"] == 500
    assert seen["level"] == "DEBUG"


def test_each_old_name_is_reported_once_without_its_value() -> None:
    result = probe(**LEGACY)
    for old in set(LEGACY) - {"LOG_LEVEL"}:
        assert result.stderr.count(f"environment variable {old} is deprecated") == 1, old
    for secret in ("p@ss:w/rd-secret", WEBHOOK_TOKEN, "oanda-token-secret"):
        assert secret not in result.stderr


def test_the_new_name_wins_over_the_old_one() -> None:
    result = probe(
        DISCORD_LIVERMORE_BOT=WEBHOOK,
        SYSTEM_NOTIFICATION_WEBHOOK_URL="https://discord.com/api/webhooks/1/new",
    )
    assert json.loads(result.stdout)["webhook"] == "https://discord.com/api/webhooks/1/new"
    assert "deprecated" not in result.stderr


def test_node_env_production_means_production() -> None:
    result = probe(NODE_ENV="production")
    assert result.returncode != 0
    assert "SECRET_KEY must be set in production" in result.stderr
