"""`make bench`: measure the machine first (tests/bench/machine.py: pg_simple_update_tps, handed to the
other scripts so that the dealing figures are also read as a ratio of it), then run every
tests/bench/bench_*.py script, each once the machine has settled (metric.settle), each printing one
JSON line per metric {"name", "value", "unit", "target", "cpu", "cpus"}; print the lines, then a
summary of targets met and missed on stderr. Exit non-zero if a script fails (a missed target is a
finding, not a crash)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
import django  # noqa: E402

django.setup()

from tests.bench.metric import PGBENCH_TPS_ENV, cpu, met, settle  # noqa: E402

REQUIRED = {"name", "value", "unit", "target"}


def main() -> int:
    failed, missed, count = [], [], 0
    model, cpus = cpu()
    sys.stderr.write(f"machine: {model}, {cpus} CPUs\n")
    env = dict(os.environ)
    here = Path(__file__).parent
    for script in [here / "machine.py", *sorted(here.glob("bench_*.py"))]:
        settle()
        result = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, env=env
        )
        for line in result.stdout.splitlines():
            try:
                metric = json.loads(line)
            except ValueError:
                continue
            if isinstance(metric, dict) and metric.keys() >= REQUIRED:
                print(json.dumps(metric), flush=True)
                count += 1
                if metric["name"] == "pg_simple_update_tps":
                    env[PGBENCH_TPS_ENV] = str(metric["value"])
                if not met(metric["value"], metric["target"]):
                    missed.append(f"{metric['name']}={metric['value']} (target {metric['target']})")
        if result.returncode != 0:
            failed.append(script.name)
            sys.stderr.write(f"{script.name} failed ({result.returncode}):\n{result.stderr[-3000:]}\n")
    sys.stderr.write(
        f"{count - len(missed)} of {count} targets met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
        + "\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
