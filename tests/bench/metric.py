"""The one line per metric that `make bench` reads: {"name", "value", "unit", "target"}."""

import json
import operator
import re

_TARGET = re.compile(r"^(<=|>=)\s*([0-9.]+)$")


def emit(name: str, value: float, unit: str, target: str) -> None:
    """`target` is a comparison with the value on its left, e.g. "<= 25" or ">= 20000"."""
    if not _TARGET.match(target):
        raise ValueError(f"target {target!r} must look like '<= 25' or '>= 20000'")
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "target": target}), flush=True)


def met(value: float, target: str) -> bool:
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"target {target!r} must look like '<= 25' or '>= 20000'")
    compare = operator.le if match.group(1) == "<=" else operator.ge
    return bool(compare(value, float(match.group(2))))
