"""The tick recorder across a real PostgreSQL restart. The server is a private one started for the
test (same binaries as the machine's cluster, own data directory and port) so stopping it does not
cut off other processes sharing the machine's database."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from marketdata import ticks
from marketdata.ticks import TickRecorder
from tests.support.waiting import wait_until

from .test_ticks import selected

pytestmark = pytest.mark.slow


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed")
    return found[-1]


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root
        self.conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, *args: str, check: bool = True) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        subprocess.run([*prefix, *args], check=check, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )
        for _ in range(100):  # pg_isready, then a real query
            ready = subprocess.run(
                [_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
            ).returncode
            if ready == 0:
                break
            time.sleep(0.1)
        with psycopg.connect(self.conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=check)

    def count(self) -> list[int]:
        with psycopg.connect(self.conninfo, connect_timeout=3) as conn:
            return [r[0] for r in conn.execute("SELECT seq FROM marketdata_tick ORDER BY seq").fetchall()]


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="lm-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = PrivatePostgres(root)
    server.init()
    server.start()
    with psycopg.connect(server.conninfo, autocommit=True) as conn, conn.cursor() as cursor:
        ticks.tick_table_create(cursor)
    try:
        yield server
    finally:
        server.stop("immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_it_keeps_what_it_buffered_through_a_postgresql_restart(postgres):
    recorder = TickRecorder(postgres.conninfo, flush_interval_s=0.2, retry_max_s=0.5)
    recorder.start()
    try:
        for seq in range(1, 501):
            recorder(selected(seq))
        wait_until(lambda: recorder.written == 500, timeout_s=10)

        postgres.stop()
        for seq in range(501, 1001):
            recorder(selected(seq))
        wait_until(lambda: recorder.failures >= 2, timeout_s=10)
        assert recorder.buffered == 500
        assert recorder.written == 500

        postgres.start()
        for seq in range(1001, 1101):
            recorder(selected(seq))
        wait_until(lambda: recorder.written == 1100, timeout_s=15)
    finally:
        recorder.stop()
    assert recorder.dropped == 0
    assert postgres.count() == list(range(1, 1101))
