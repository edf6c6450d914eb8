"""Helpers shared by the benchmark scripts: interleaved rounds, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }


def interleave(
    rounds: int, cases: dict[str, Callable[[], dict[str, float]]]
) -> dict[str, dict[str, float]]:
    """Run every case once per round, cases interleaved; return the median of each figure."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            samples[name].append(case())
    return {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True))
    sys.stdout.flush()
