"""Waiting for conditions that have no wait API of their own (test helpers).

Where an event, ``job.wait``, ``wait_until_all_jobs_finished`` or a probe can say that
something happened, tests use those. These helpers are for the rest: a poster blocked for room
in a mailbox, calls queued at a busy supervisor, a thread blocked inside a call. Each polls an
observable condition until a deadline and fails with what it waited for; none waits a fixed
time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

POLL = 0.001  # seconds between two looks at the condition
WAITS = frozenset({"wait", "_wait_for_tstate_lock"})  # where threading blocks a thread


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it returns something true (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


def waiting_inside(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is blocked on a ``threading`` wait (an Event, a Condition, a join)
    called, at any depth, from a function named ``function``."""
    frame = sys._current_frames().get(thread.ident or -1)
    if (
        frame is None
        or not frame.f_code.co_filename.endswith("threading.py")
        or frame.f_code.co_name not in WAITS
    ):
        return False
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False
