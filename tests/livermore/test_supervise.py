"""The Procfile supervisor `make run` uses: a process that exits is restarted, its siblings run on."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def supervise(tmp_path: Path, scripts: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], Path]:
    """Supervise one Python process per script (a Procfile line each)."""
    lines = []
    for name, source in scripts.items():
        (tmp_path / f"{name}.py").write_text(source)
        lines.append(f"{name}: {sys.executable} {tmp_path / name}.py\n")
    (tmp_path / "Procfile").write_text("".join(lines))
    log = tmp_path / "out.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "livermore.supervise", "-f", str(tmp_path / "Procfile"), *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return process, log


def pids(log: Path, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"{name}\.1 started \(pid=(\d+)\)", log.read_text())]


def test_a_process_that_exits_is_restarted_and_its_siblings_keep_running(tmp_path: Path) -> None:
    process, log = supervise(
        tmp_path,
        {
            "steady": "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)\n",
            "crashy": "import sys\nprint('up', flush=True)\nsys.exit(3)\n",
        },
    )
    try:
        wait_until(lambda: len(pids(log, "crashy")) >= 3, timeout_s=15)  # backoff 1 s, then 2 s
        output = log.read_text()
        assert len(pids(log, "steady")) == 1, output
        assert "crashy.1 stopped (rc=3)" in output and "crashy.1 restarting in 1 s" in output
        assert "crashy.1 restarting in 2 s" in output
        assert re.search(r"steady\.1 +\| tick", output)
        steady = pids(log, "steady")[0]
        os.kill(steady, 0)  # still alive
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text()
    assert "steady.1 stopped (rc=-15)" in output
    assert "Traceback" not in output


def test_a_process_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    process, log = supervise(
        tmp_path,
        {
            "stubborn": "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)\n"
        },
        "--stop-timeout",
        "1",
    )
    try:
        wait_until(lambda: "ready" in log.read_text(), timeout_s=10)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 1
        assert time.monotonic() - began < 5
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text()
    assert "sending SIGKILL to stubborn.1" in output and "stubborn.1 stopped (rc=-9)" in output
