"""The Procfile supervisor `make run` uses: a process that exits is restarted, its siblings run on."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

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


COUNTING = """import os, stat, sys, time
import django
django.setup()
from kernel import metrics
metrics.FAILOVERS.labels(symbol="BTCUSD").inc()
metrics.VENUE_UP.labels(venue=sys.argv[0]).set(1)
where = os.environ["PROMETHEUS_MULTIPROC_DIR"]
print("counted in", where, oct(stat.S_IMODE(os.stat(where).st_mode)), flush=True)
"""


def scrape(metrics_dir: str) -> list[str]:
    """GET /metrics as a web process of the run reads it (kernel.metrics, multiprocess mode)."""
    source = (
        "import django; django.setup(); from django.conf import settings; settings.METRICS_COLLECTORS = []; "
        "from kernel import metrics; print(metrics.metrics_text().decode())"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    done = subprocess.run(
        [sys.executable, "-c", source], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    return done.stdout.splitlines()


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_every_process_of_a_run_counts_into_one_fresh_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    steady = COUNTING + "time.sleep(60)\n"
    process, log = supervise(tmp_path, {"web": steady, "market": steady, "once": COUNTING + "sys.exit(3)\n"})
    try:
        wait_until(lambda: log.read_text().count("counted in") >= 3, timeout_s=60)
        wait_until(lambda: "once.1 stopped (rc=3)" in log.read_text(), timeout_s=10)
        (where,) = set(re.findall(r"counted in (\S+) 0o700", log.read_text()))
        assert Path(where).parent == Path(tempfile.gettempdir())
        lines = scrape(where)
        (failovers,) = [
            line for line in lines if line.startswith('livermore_failovers_total{symbol="BTCUSD"}')
        ]
        assert float(failovers.rsplit(" ", 1)[1]) >= 3  # every process's count, the exited one's too
        live = {line.split('"')[1] for line in lines if line.startswith("livermore_venue_up{")}
        assert {str(tmp_path / "web.py"), str(tmp_path / "market.py")} <= live
        once = pids(log, "once")[0]
        assert not list(Path(where).glob(f"gauge_livemax_{once}.db"))
    finally:
        stop(process)
    assert not Path(where).exists()


def test_a_named_metrics_directory_is_emptied_at_start_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "metrics"
    named.mkdir(mode=0o755)
    (named / "counter_999999.db").write_bytes(b"a previous run's values")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(named))
    process, log = supervise(tmp_path, {"web": COUNTING + "time.sleep(60)\n"})
    try:
        wait_until(lambda: "counted in" in log.read_text(), timeout_s=60)
        assert f"counted in {named} 0o700" in log.read_text()
        assert not (named / "counter_999999.db").exists()
    finally:
        stop(process)
    assert named.is_dir()
