"""A test kit for message-driven systems: deterministic runs, virtual time, probes.

* ``DeterministicRuntime(seed=S)`` (same as ``Runtime(deterministic=True, seed=S)``) runs no
  actor thread: one seeded scheduler delivers every message on the calling thread, choosing
  the next mailbox with ``random.Random(S)``. The same seed, posts and time advances give the
  same delivery order, trace logs and final state, byte for byte; other seeds explore other
  interleavings. Time is virtual: delays, retry backoff, timeouts and interval policies use a
  clock that moves only with ``runtime.advance(seconds)`` (and while waiting: ``job.wait()``,
  ``wait_until_all_jobs_finished()`` and probes move it to the next timer), so a test of a
  30-second timeout takes milliseconds. ``runtime.run_until_idle()`` delivers everything that
  can be delivered now; ``runtime.delivery_log()`` lists what was delivered, in order.
* ``runtime.probe(routine_id, event)``: a :class:`Probe` with ``expect``,
  ``expect_no_message`` and ``messages``.
* A pytest plugin (installed with the package) with fixtures ``actor_runtime`` and
  ``deterministic_runtime``; a failing test that used a seed prints it, and
  ``--actorflow-seed=S`` replays it.
* Hypothesis strategies in :mod:`actorflow.testing.strategies`.
* ``load_fault_plan(path)``: a :class:`~actorflow.faults.FaultPlan` from a YAML file (see
  :mod:`actorflow.fault_files`); a mistake in it raises :class:`FaultPlanFileError`
  (``file:line: problem``).
* ``replay(recording, flow)``: run a job recorded with ``Runtime(record=True)`` again on the
  deterministic runtime, with the values its logic read; a :class:`ReplayReport` says where
  the new run first diverges and reraises the recorded failure (see ``actorflow.recording``).
"""

from __future__ import annotations

from typing import Any

from actorflow.fault_files import FaultPlanFileError, load_fault_plan
from actorflow.runtime import Runtime
from actorflow.testing._replay import (
    Divergence,
    RecordingFormatError,
    ReplayDivergedError,
    ReplayReport,
    replay,
)
from actorflow.testing.probe import Probe, ProbeMessage

__all__ = [
    "DeterministicRuntime",
    "Divergence",
    "FaultPlanFileError",
    "Probe",
    "ProbeMessage",
    "RecordingFormatError",
    "ReplayDivergedError",
    "ReplayReport",
    "load_fault_plan",
    "replay",
]


class DeterministicRuntime(Runtime):
    """A ``Runtime(deterministic=True, seed=seed, **options)``."""

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(deterministic=True, seed=seed, **options)
