"""Logging as configured by settings: JSON or readable lines, structured fields, a rotating file, the
slow-request log, and no secret in any line, whatever the path that logged it."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import ROOT

WEBHOOK_TOKEN = "wh-Secret_Token-42"
API_KEY = "lvk_planted_api_key_secret"
FIX_PASSWORD = "fix-pass-secret"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
PEM_BODY = secrets.token_hex(24)  # planted, made at test time
PEM = f"-----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}\n-----END EC PRIVATE KEY-----"
SECRETS = [WEBHOOK_TOKEN, API_KEY, FIX_PASSWORD, JWT, PEM_BODY, "db-pass-secret"]

PROBE = f"""
import logging, django
django.setup()
from django.test import Client
log = logging.getLogger("marketdata.probe")
webhook = "https://discord.com/api/webhooks/1234/{WEBHOOK_TOKEN}"
log.warning("discord delivery to %s failed", webhook, extra={{"venue": "oanda", "symbol": "EURUSD"}})
headers = "{{'Authorization': 'Api-Key {API_KEY}'}}"
log.info("request headers " + headers, extra={{"account": "1001", "order": "77"}})
log.info("fix out 8=FIX.4.4|35=A|553=desk|554={FIX_PASSWORD}|", extra={{"session": "lp1"}})
log.info("token refreshed: Bearer {JWT} and raw {JWT}")
log.error("coinbase key %r", {PEM!r})
log.error("database postgres://broker:db-pass-secret@db:5432/x down")
try:
    raise RuntimeError("password={FIX_PASSWORD} api_key={API_KEY} " + webhook)
except RuntimeError:
    log.exception("task failed")
Client(HTTP_AUTHORIZATION="Api-Key {API_KEY}").get("/healthz", HTTP_HOST="localhost")
"""


def run(tmp_path: Path, **env: str) -> tuple[str, str]:
    log_file = tmp_path / "logs" / "livermore.log"
    base = {k: v for k, v in os.environ.items() if k not in {"LOG_FILE", "LOG_FORMAT", "LOG_SLOW_MS"}}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "livermore.settings",
            "LOG_LEVEL": "INFO",
            "LOG_FILE": str(log_file),
            "LOG_SLOW_MS": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr, log_file.read_text()


@pytest.mark.parametrize("form", ["json", "readable"])
def test_no_planted_secret_reaches_the_console_or_the_file(tmp_path: Path, form: str) -> None:
    console, file = run(tmp_path, LOG_FORMAT=form)
    for secret in SECRETS:
        assert secret not in console
        assert secret not in file
    assert "discord delivery to https://discord.com/api/webhooks/1234/[redacted] failed" in console
    assert "554=[redacted]" in file and "task failed" in file and "RuntimeError" in file


def test_json_lines_carry_the_structured_fields(tmp_path: Path) -> None:
    console, file = run(tmp_path, LOG_FORMAT="json")
    lines = [json.loads(line) for line in file.splitlines()]
    delivery = next(line for line in lines if line["message"].startswith("discord delivery"))
    assert (delivery["venue"], delivery["symbol"], delivery["level"]) == ("oanda", "EURUSD", "WARNING")
    fix = next(line for line in lines if line["message"].startswith("fix out"))
    assert fix["session"] == "lp1"
    assert next(json.loads(line)["logger"] for line in console.splitlines()) == "marketdata.probe"


def test_readable_lines_put_the_fields_after_the_message(tmp_path: Path) -> None:
    console, _ = run(tmp_path, LOG_FORMAT="readable")
    line = next(line for line in console.splitlines() if "request headers" in line)
    assert line.endswith("account=1001 order=77")
    assert not line.lstrip().startswith("{")


def test_slow_requests_are_logged_with_path_and_duration(tmp_path: Path) -> None:
    _, file = run(tmp_path, LOG_FORMAT="json", LOG_SLOW_MS="1")
    slow = [json.loads(line) for line in file.splitlines() if '"livermore.slow"' in line]
    assert slow and slow[0]["path"] == "/healthz" and slow[0]["duration_ms"] >= 1
