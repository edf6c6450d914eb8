"""The conformance suite: one set of tests that every backend must pass.

Every test here takes the ``backend`` fixture and runs once per backend, in the manner of
pykka's ``runtime`` fixture. The fixture gives a :class:`conformance_kit.Backend`, whose
``runtime(**options)`` makes a runtime of that backend:

=================  ====================================================================
``threads``        ``Runtime(strict=False)``: the non-strict fast path users run
``threads-strict`` ``Runtime(strict=True)``: every envelope pickled as if it crossed processes
``deterministic``  ``DeterministicRuntime(seed=7, strict=False)``: one seeded scheduler on the
                   test's thread, virtual time (its waits move it)
``ray``            ``Runtime(backend="ray")``, joining the session's local Ray (``local_ray``;
                   marked ``ray``)
=================  ====================================================================

The tests are written once, backend-neutral:

* they wait only through ``job.wait(backend.wait)`` and
  ``runtime.wait_until_all_jobs_finished(backend.wait)``, which run the scheduler on the
  deterministic backend; never with sleeps;
* they observe only what every backend reports to the driver (job status, error, data and
  trace, WorkerState, ``runtime.metrics()``, dead letters), never Python objects a routine
  would write to (on Ray the routine runs in another process);
* where a logic must be held while the test acts (a full mailbox, a cancellation in flight),
  they use ``backend.gate()``: a ``threading.Event`` pair on threads, a Ray actor on Ray, and
  on the deterministic backend the action runs inside the held logic, on the scheduler's
  thread;
* a feature a backend refuses by design (``backend.refuses(feature)``: fault plans,
  deterministic mode and state limits on Ray, a store object instead of a store factory) is
  asserted refused with its named error; there are no skips.

A test that fails on a backend because of a defect there is not weakened: it is decorated
with ``@defects(ray="what is wrong")``, which makes that backend's run a strict xfail (it turns
red once the defect is fixed, and the mark must then go).

Every test is marked ``conformance`` (``pytest -m conformance`` runs the suite alone).

To add a backend: add its runtime factory to ``conformance_kit.BACKENDS``, its patience to
``WAIT_SECONDS``, what it refuses by design to ``REFUSED``, its marks (if any) to ``_MARKS``,
and, if the test's own process cannot hold a routine's logic with a ``threading.Event``, a
gate class for it in ``Backend.gate``. Then run this directory and mark what fails with
``@defects``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conformance_kit import BACKENDS, Backend, actorflow_threads, backend_params

HERE = Path(__file__).resolve().parent


# test id -> the backend it runs on, and the outcomes counted per backend (for the summary)
_BACKEND_OF: dict[str, str] = {}
_OUTCOMES: dict[str, Counter[str]] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.conformance)
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "backend" in callspec.params:
                _BACKEND_OF[item.nodeid] = str(callspec.params["backend"])
            module = getattr(item, "module", None)
            if module is not None:  # its routines reach Ray's processes by value
                cloudpickle.register_pickle_by_value(module)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = _BACKEND_OF.get(report.nodeid)
    if name is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        _OUTCOMES.setdefault(name, Counter())[outcome] += 1
    elif report.when == "teardown" and report.failed:
        _OUTCOMES.setdefault(name, Counter())["error"] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per backend: how many conformance tests ran on it, and how they ended."""
    if not _OUTCOMES:
        return
    terminalreporter.section("conformance suite per backend")
    for name in BACKENDS:
        counts = _OUTCOMES.get(name)
        if counts:
            told = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
            terminalreporter.write_line(f"{name}: {sum(counts.values())} tests ({told})")


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend the test runs on; its runtimes are shut down after the test, and on the
    backends whose actors are threads of this process no actorflow thread may outlive them."""
    name = str(request.param)
    if name == "ray":
        request.getfixturevalue("local_ray")
    before = set(actorflow_threads())
    kit = Backend(name)
    try:
        yield kit
    finally:
        kit.close()
    if not kit.is_ray:
        leaked = [t.name for t in actorflow_threads() if t not in before]
        assert not leaked, f"threads alive after shutdown: {leaked}"
