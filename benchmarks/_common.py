"""Helpers shared by the benchmark scripts: interleaved rounds, medians, JSON output."""

from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(terse=True),
    }


_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


def target(value: float, op: str, limit: float) -> dict[str, Any]:
    """One target as JSON: the figure, the bound it must meet (``>=`` or ``<=``), and ``met``."""
    return {"value": value, "target": f"{op} {limit:,g}", "met": bool(_COMPARE[op](value, limit))}


def rss_bytes() -> int:
    """Resident set size of this process, in bytes."""
    import psutil  # noqa: PLC0415

    return int(psutil.Process().memory_info().rss)


def ratio(numerator: float, denominator: float, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded (None when the denominator is 0: JSON has no NaN)."""
    return round(numerator / denominator, digits) if denominator else None


def interleave(
    rounds: int, cases: dict[str, Callable[[], dict[str, float]]]
) -> dict[str, dict[str, float]]:
    """Run every case once per round, cases interleaved; return the median of each figure."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            samples[name].append(case())
    return {name: medians(runs) for name, runs in samples.items()}


def medians(runs: list[dict[str, float]], digits: int | None = None) -> dict[str, float]:
    """The median of each figure over ``runs`` (rounded to ``digits`` if given; {} if none)."""
    if not runs:
        return {}
    result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return result if digits is None else {k: round(v, digits) for k, v in result.items()}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True))
    sys.stdout.flush()
