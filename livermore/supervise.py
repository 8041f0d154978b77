"""`python -m livermore.supervise [-f Procfile] [NAME ...]`: run the Procfile's processes (all, or the
named ones) and restart any that exits, without stopping the others.

It replaces honcho under `make run`: honcho stops every process as soon as one ends, so one process
exiting (a Redis blink that outlasted a lease, a crash) took the whole desk down. Here a process that
exits is started again after a backoff (1 s, doubling to 30 s, back to 1 s once it has run for a
minute). SIGTERM or SIGINT stops them all: SIGTERM to each, SIGKILL to what is left after
`--stop-timeout` seconds. The output is honcho's: `HH:MM:SS name.1 | line`, and
`HH:MM:SS system | name.1 started (pid=N)` / `stopped (rc=N)` / `restarting in N s`.

The processes stay in the supervisor's process group, so killing the group kills them all.

Metrics: every process it starts gets PROMETHEUS_MULTIPROC_DIR (kernel/metrics.py), one directory
for the run (mode 0700, new and empty, removed at the end; or the one the environment names, emptied
at start), so a scrape of any web process adds up the web, market, worker and fix processes. A
process that exits has its live gauges dropped there.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from prometheus_client.multiprocess import mark_process_dead

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a process that ran this long starts again at the first backoff
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@dataclass
class Child:
    name: str
    command: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    restarts: int = 0
    readers: list[threading.Thread] = field(default_factory=list)


def procfile(path: Path) -> list[tuple[str, str]]:
    entries = []
    for line in path.read_text().splitlines():
        match = _LINE.match(line.strip())
        if match and not line.lstrip().startswith("#"):
            entries.append((match.group(1), match.group(2)))
    return entries


def metrics_dir_prepare() -> tuple[Path, bool]:
    """The run's metrics directory, mode 0700 and empty, and whether it is the run's own (made here,
    removed at the end) rather than the one PROMETHEUS_MULTIPROC_DIR names."""
    if named := os.environ.get(METRICS_ENV):
        path = Path(named)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
        for stale in path.glob("*.db"):  # a previous run's values
            stale.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="livermore-metrics-")), True


class Supervisor:
    def __init__(
        self,
        entries: list[tuple[str, str]],
        *,
        stop_timeout_s: float,
        out: IO[str],
        metrics_dir: Path,
    ) -> None:
        self.children = [Child(f"{name}.1", command) for name, command in entries]
        self.metrics_dir = metrics_dir
        self.stop_timeout_s = stop_timeout_s
        self.out = out
        self.width = max([len(c.name) for c in self.children] + [len("system")])
        self.print_lock = threading.Lock()
        self.stopping = threading.Event()

    def say(self, name: str, text: str) -> None:
        with self.print_lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | {text}\n")
            self.out.flush()

    def start(self, child: Child) -> None:
        # The shell expands the line's variables, then becomes the program (`exec env` keeps the
        # line's VAR=value assignments), so the supervisor's signals reach the program itself.
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec env {child.command}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        child.process, child.started_at, child.restart_at = process, time.monotonic(), None
        assert process.stdout is not None
        reader = threading.Thread(target=self.relay, args=(child.name, process.stdout), daemon=True)
        reader.start()
        child.readers = [reader]
        self.say("system", f"{child.name} started (pid={process.pid})")

    def relay(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    def reap(self, child: Child) -> None:
        """A child that exited: reported, and its restart scheduled unless everything is stopping."""
        assert child.process is not None
        rc = child.process.returncode
        for reader in child.readers:
            reader.join(2)
        mark_process_dead(child.process.pid, str(self.metrics_dir))
        child.process = None
        self.say("system", f"{child.name} stopped (rc={rc})")
        if self.stopping.is_set():
            return
        if time.monotonic() - child.started_at >= HEALTHY_AFTER_S:
            child.backoff_s = BACKOFF_FIRST_S
        child.restart_at = time.monotonic() + child.backoff_s
        child.restarts += 1
        self.say("system", f"{child.name} restarting in {child.backoff_s:g} s")
        child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)

    def run(self) -> int:
        for child in self.children:
            self.start(child)
        while not self.stopping.is_set():
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    self.reap(child)
                elif (
                    child.process is None
                    and child.restart_at is not None
                    and time.monotonic() >= child.restart_at
                ):
                    self.start(child)
            self.stopping.wait(0.2)
        return self.stop_all()

    def stop_all(self) -> int:
        running = [c for c in self.children if c.process is not None]
        signalled = set()  # a child that had exited on its own before the stop is reaped, not judged
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                self.say("system", f"sending SIGTERM to {child.name} (pid={child.process.pid})")
                child.process.send_signal(signal.SIGTERM)
                signalled.add(child.name)
        deadline = time.monotonic() + self.stop_timeout_s
        failed = False
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                self.say("system", f"sending SIGKILL to {child.name} (pid={child.process.pid})")
                child.process.kill()
                child.process.wait()
                failed = True
            if child.name in signalled:
                failed = failed or child.process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)
            self.reap(child)
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-f", "--procfile", default="Procfile", type=Path)
    parser.add_argument("--stop-timeout", type=float, default=float(os.environ.get("STOP_TIMEOUT_S", 20)))
    parser.add_argument("names", nargs="*", help="only these processes")
    args = parser.parse_args(argv)
    entries = procfile(args.procfile)
    if args.names:
        unknown = set(args.names) - {name for name, _ in entries}
        if unknown:
            parser.error(f"not in {args.procfile}: {', '.join(sorted(unknown))}")
        entries = [(name, command) for name, command in entries if name in args.names]
    metrics_dir, own_metrics_dir = metrics_dir_prepare()
    os.environ[METRICS_ENV] = str(metrics_dir)  # inherited by every process started
    supervisor = Supervisor(
        entries, stop_timeout_s=args.stop_timeout, out=sys.stdout, metrics_dir=metrics_dir
    )

    def stop(signum: int, frame: object) -> None:
        if not supervisor.stopping.is_set():
            supervisor.say("system", f"{signal.Signals(signum).name} received: stopping")
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return supervisor.run()
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
