"""Start Livermore's own processes (the Procfile's) against the test database, on a free port."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_url() -> str:
    """DATABASE_URL of the database this test runs on (the test database), password included,
    for child processes."""
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{user}{password}@{host}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


def stack_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: the test database, and a Redis prefix of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        REDIS_PREFIX=f"lt-{uuid.uuid4().hex[:8]}",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def production_env(**extra: str) -> dict[str, str]:
    """stack_env for a production process: DJANGO_ENV=production with fresh secrets, a live
    deployment unless `extra` sets LIVERMORE_DEMO."""
    from cryptography.fernet import Fernet

    env = stack_env(
        DJANGO_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        JWT_SIGNING_KEY=secrets.token_urlsafe(48),
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="localhost",
    )
    for name in ("LIVERMORE_DEMO", "DEBUG", "DJANGO_SUPERUSER_USERNAME", "DJANGO_SUPERUSER_PASSWORD"):
        env.pop(name, None)
    env.update(extra)
    return env


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    redis_prefix: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_http(self, path: str, *, status: int = 200, timeout: float = 60) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"stack exited with {self.process.returncode}:\n{self.output()[-4000:]}")
            try:
                response = httpx.get(self.url + path, timeout=2)
                if response.status_code == status:
                    return response
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"{path} did not answer {status} (last: {last}):\n{self.output()[-4000:]}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the supervisor, as systemd or a deploy would: it stops each process in turn (a
        signal to the whole group would also reach Celery's pool children mid-task); returns the exit
        code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(
                    f"stack did not stop within {timeout}s:\n{self.output()[-4000:]}"
                ) from None
        return self.process.returncode


@contextmanager
def run_stack(tmp_path: Path, *processes: str, **env: str) -> Iterator[Stack]:
    """The supervisor runs the Procfile (all processes, or the named ones) exactly as `make run` does."""
    port = free_port()
    log = tmp_path / "stack.log"
    with log.open("wb") as out:
        child_env = stack_env(PORT=str(port), **env)
        process = subprocess.Popen(
            [sys.executable, "-m", "livermore.supervise", "-f", str(ROOT / "Procfile"), *processes],
            cwd=ROOT,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(process, port, log, child_env["REDIS_PREFIX"])
    try:
        yield stack
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
