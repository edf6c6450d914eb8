"""Switching actorflow's loguru logging on and off.

Like any library that logs through loguru, actorflow is silent until the application opts in:
records are disabled for the ``actorflow`` package at import. Each record is bound to the
worker, routine and (where there is one) job it is about, so a sink can filter or format by them
(``{extra[job]}``).
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger

__all__ = ["disable_logging", "enable_logging"]


def enable_logging(level: str = "INFO", sink: Any = None, *, serialize: bool = False) -> int | None:
    """Turn actorflow's log records on.

    With ``sink`` given (a file path, stream or callable), also add a loguru sink that receives
    only actorflow's records at ``level`` or above (``serialize=True`` writes JSON lines) and
    return its handler id; otherwise records go to whatever sinks the application configured.
    """
    logger.enable("actorflow")
    if sink is None:
        return None
    return logger.add(
        sink if sink != "stderr" else sys.stderr,
        level=level,
        serialize=serialize,
        filter=lambda record: record["name"] is not None and record["name"].startswith("actorflow"),
    )


def disable_logging() -> None:
    """Turn actorflow's log records off again (the default)."""
    logger.disable("actorflow")
