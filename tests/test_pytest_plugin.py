"""The pytest plugin: fixtures, the seed printed on failure, and replay with --actorflow-seed."""

from __future__ import annotations

import pytest

TEST_FILE = """
from actorflow import Flow, FlowRegistry, Routine


def make_flow():
    r = Routine()
    r.add_slot("in")
    r.set_logic(lambda sd, m, ws: None)
    flow = Flow("plugin-flow")
    flow.add_routine(r, "r")
    FlowRegistry.get_instance().register(flow)


def test_threads(actor_runtime):
    make_flow()
    assert actor_runtime.post("plugin-flow", "r", "in", 1)[1].wait(10)


def test_deterministic_fails(deterministic_runtime):
    make_flow()
    print("seed used:", deterministic_runtime.seed)
    deterministic_runtime.post("plugin-flow", "r", "in", 1)
    assert deterministic_runtime.wait_until_all_jobs_finished()
    assert False, "deliberate failure"
"""


def test_fixtures_and_seed_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=TEST_FILE)
    result = pytester.runpytest("-q")  # the pytest11 entry point loads the plugin
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*deterministic_runtime seed: * (replay with --actorflow-seed=*)"])


def test_replay_with_a_given_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=TEST_FILE)
    result = pytester.runpytest("-q", "--actorflow-seed=1234", "-k", "deterministic")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*seed used: 1234*",
            "*deterministic_runtime seed: 1234 (replay with --actorflow-seed=1234)*",
        ]
    )


FACTORY_TEST = """
from actorflow import Flow, FlowRegistry, Routine
from actorflow.faults import FaultPlan


def test_with_faults(make_deterministic_runtime):
    r = Routine()
    r.add_slot("in")
    r.set_logic(lambda sd, m, ws: None)
    flow = Flow("factory-flow")
    flow.add_routine(r, "r")
    FlowRegistry.get_instance().register(flow)
    runtime = make_deterministic_runtime(faults=FaultPlan().drop(routine="r"))
    runtime.post("factory-flow", "r", "in", 1)
    runtime.run_until_idle()
    assert runtime.fault_log() == []
"""


def test_runtime_factory_takes_options_and_reports_its_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_factory=FACTORY_TEST)
    result = pytester.runpytest("-q", "--actorflow-seed=77")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*deterministic_runtime seed: 77 (replay with --actorflow-seed=77)*"]
    )
