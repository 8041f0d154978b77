"""The machine's own yardstick, measured first by `make bench` in the same run: PostgreSQL's
transaction rate under pgbench's built-in simple-update script (2 clients, fixed duration, on a
scratch database), printed as pg_simple_update_tps beside the CPU model. The dealing benchmarks also
print their figures as a ratio of it, so a slower disk or CPU shows in the yardstick too.

Its target is a floor below which the machine itself is too slow for the dealing bars to mean much."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.metric import emit, pgbench_simple_update_tps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")

import django

django.setup()


def main() -> None:
    emit("pg_simple_update_tps", pgbench_simple_update_tps(), "tps", ">= 1000")


if __name__ == "__main__":
    main()
