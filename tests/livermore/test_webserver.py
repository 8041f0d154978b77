"""The web server's command line (livermore/webserver.py): daphne's access log only when asked for."""

from typing import Any
from unittest.mock import patch

import pytest
from daphne.cli import CommandLineInterface

from livermore.webserver import FlowControlCommandLine

APP = "livermore.asgi:application"


def started_with(args: list[str]) -> tuple[list[str], Any]:
    """The arguments daphne runs with, and the access logger its server would keep."""
    seen: dict[str, Any] = {}

    def run(self: CommandLineInterface, args: list[str]) -> None:
        seen["args"] = args
        server = self.server_class(application=None, endpoints=["tcp:port=0"], action_logger=print)
        seen["logger"] = server.action_logger

    with patch.object(CommandLineInterface, "run", run):
        FlowControlCommandLine().run(args)
    return seen["args"], seen["logger"]


def test_requests_are_not_access_logged_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_ACCESS_LOG", raising=False)
    assert started_with([APP]) == ([APP], None)


def test_web_access_log_turns_the_access_log_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_ACCESS_LOG", "-")
    assert started_with([APP]) == ([APP, "--access-log", "-"], print)


def test_an_access_log_on_the_command_line_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_ACCESS_LOG", raising=False)
    assert started_with(["--access-log", "/var/log/web.log", APP]) == (
        ["--access-log", "/var/log/web.log", APP],
        print,
    )
