"""Recording jobs and replaying them: what is kept and how (values, bounds, batches), where a
replay of changed code diverges, named errors for bad input, and ``actorflow replay``."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from actorflow import (
    Flow,
    FlowRegistry,
    RecordingNotFoundError,
    RecordSettings,
    Routine,
    Runtime,
    batch_size_policy,
    get_current_job,
)
from actorflow.cli import main
from actorflow.recording import Unreplayable, decode_value, encode_value
from actorflow.testing import (
    RecordingFormatError,
    ReplayDivergedError,
    replay,
)

pytestmark = pytest.mark.timeout(60)


# -- values ---------------------------------------------------------------------------------
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.dictionaries(st.integers() | st.tuples(st.integers()), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
    ),
    max_leaves=12,
)


@given(_values)
def test_every_json_like_value_comes_back_as_it_was_through_strict_json(value: Any) -> None:
    text = json.dumps(encode_value(value), allow_nan=False)
    assert decode_value(json.loads(text)) == value


def test_non_finite_floats_come_back() -> None:
    decoded = decode_value(json.loads(json.dumps(encode_value([math.inf, -math.inf, math.nan]))))
    assert decoded[:2] == [math.inf, -math.inf] and math.isnan(decoded[2])


class _Coupon:
    def __repr__(self) -> str:
        return "Coupon(SAVE10)"


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_whose_repr_fails_is_kept_without_one() -> None:
    assert decode_value(encode_value(_BadRepr())).repr == "<repr failed: RuntimeError>"


def test_a_value_json_cannot_hold_is_kept_as_its_type_and_repr() -> None:
    encoded = encode_value({"coupon": _Coupon()})
    assert json.loads(json.dumps(encoded)) == encoded
    decoded = decode_value(encoded)["coupon"]
    assert isinstance(decoded, Unreplayable)
    assert decoded.type.endswith("test_recording._Coupon") and decoded.repr == "Coupon(SAVE10)"


# -- flows ----------------------------------------------------------------------------------
def _pricing_flow(discount: float = 0.1, flow_id: str = "pricing") -> Flow:
    """quote -> total: quote reads the price list from the state; total applies a discount and
    fails an order above its customer's limit."""
    quote = Routine()
    quote.add_slot("order")
    quote.add_event("quoted")

    def quote_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        order = slot_data["order"][0]
        prices = state.get_routine_state("_prices")
        quote.emit("quoted", amount=prices[order["item"]] * order["quantity"])

    quote.set_logic(quote_logic)
    total = Routine()
    total.add_slot("quoted")

    def total_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        amount = slot_data["quoted"][0]["amount"] * (1 - discount)
        job = get_current_job()
        assert job is not None
        job.set_data("total", amount)
        if amount > job.metadata["limit"]:
            raise ValueError(f"total {amount:g} is above the limit {job.metadata['limit']}")

    total.set_logic(total_logic)
    flow = Flow(flow_id)
    flow.add_routine(quote, "quote")
    flow.add_routine(total, "total")
    flow.connect("quote", "quoted", "total", "quoted")
    return flow


def _record_a_failed_order(flow: Flow) -> dict[str, Any]:
    registry = FlowRegistry()
    registry.register(flow)
    with Runtime(record=True, registry=registry) as runtime:
        state = runtime.exec(flow.flow_id, worker_id="w")
        state.update_routine_state("_prices", {"pen": 30})
        order = {"item": "pen", "quantity": 4}
        _, job = runtime.post(flow.flow_id, "quote", "order", order, {"limit": 100}, "w")
        assert job.wait(10)
        recording = runtime.recording(job.job_id)
    assert recording["status"] == "failed"
    return json.loads(json.dumps(recording))


def test_a_replay_of_the_same_code_reproduces_the_failure() -> None:
    recording = _record_a_failed_order(_pricing_flow())
    report = replay(recording, _pricing_flow())
    assert report.reproduced
    assert report.divergence is None
    report.assert_reproduced()
    with pytest.raises(ValueError, match="total 108 is above the limit 100"):
        report.reraise()


def test_a_replay_of_changed_code_says_where_it_diverges() -> None:
    recording = _record_a_failed_order(_pricing_flow(discount=0.1))
    report = replay(recording, _pricing_flow(discount=0.2))  # the fix: a bigger discount
    assert not report.reproduced
    assert report.status == "completed"
    divergence = report.divergence
    assert divergence is not None
    assert (divergence.step, divergence.routine, divergence.run, divergence.part) == (
        1,
        "total",
        1,
        "job_writes",
    )
    assert divergence.recorded == {"total": 108.0}
    assert divergence.replayed == {"total": 96.0}
    assert "diverged at step 1 (routine 'total', run 1): job_writes differ" in report.summary()
    with pytest.raises(ReplayDivergedError, match="NOT reproduced"):
        report.assert_reproduced()
    with pytest.raises(ReplayDivergedError, match="raised nothing"):
        report.reraise()


def test_a_state_call_the_recording_does_not_have_is_the_divergence() -> None:
    recording = _record_a_failed_order(_pricing_flow())
    changed = _pricing_flow()
    quote = changed.get_routine("quote")

    def reads_another_key(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        prices = state.get_routine_state("_catalogue") or {"pen": 30}
        quote.emit("quoted", amount=prices["pen"] * slot_data["order"][0]["quantity"])

    quote.set_logic(reads_another_key)
    report = replay(recording, changed)
    assert report.divergence is not None
    assert (report.divergence.routine, report.divergence.part) == ("quote", "state_calls")
    assert report.divergence.replayed == [{"op": "get", "key": "_catalogue", "result": None}]


def test_a_run_the_recording_lacks_or_has_more_of_is_the_divergence() -> None:
    recording = _record_a_failed_order(_pricing_flow())
    changed = _pricing_flow()
    quote = changed.get_routine("quote")
    # reads the prices as before, no longer emits
    quote.set_logic(lambda slot_data, message, state: state.get_routine_state("_prices"))
    report = replay(recording, changed)
    assert report.divergence is not None
    assert (report.divergence.part, report.divergence.routine) == ("emits", "quote")
    trimmed = {**recording, "steps": recording["steps"][:1]}
    report = replay(trimmed, _pricing_flow())
    assert report.divergence is not None
    assert (report.divergence.part, report.divergence.routine) == ("run", "total")
    assert "the recording has no such run" in report.divergence.describe()


def test_a_batch_step_is_in_the_recording_of_each_job_it_ran_for() -> None:
    batch = Routine()
    batch.add_slot("rows")
    batch.set_activation_policy(batch_size_policy(2, timeout=None))
    batch.set_logic(lambda slot_data, message, state: None)
    flow = Flow("batches")
    flow.add_routine(batch, "batch")
    registry = FlowRegistry()
    registry.register(flow)
    with Runtime(record=True, registry=registry) as runtime:
        jobs = [runtime.post("batches", "batch", "rows", n)[1] for n in (1, 2)]
        assert runtime.wait_until_all_jobs_finished(10)
        steps = [runtime.recording(job.job_id)["steps"] for job in jobs]
    assert steps[0] == steps[1]
    assert steps[0][0]["slot_data"] == {"rows": [1, 2]}
    assert steps[0][0]["jobs"] == [job.job_id for job in jobs]


def test_recording_is_bounded_by_jobs_and_steps() -> None:
    flow = _pricing_flow()
    registry = FlowRegistry()
    registry.register(flow)
    settings = RecordSettings(max_jobs=2, max_steps=1)
    with Runtime(record=settings, registry=registry) as runtime:
        runtime.exec("pricing", worker_id="w").update_routine_state("_prices", {"pen": 1})
        order = {"item": "pen", "quantity": 1}
        jobs = [runtime.post("pricing", "quote", "order", order, {"limit": 9})[1] for _ in "abc"]
        assert runtime.wait_until_all_jobs_finished(10)
        with pytest.raises(RecordingNotFoundError, match="max_jobs"):
            runtime.recording(jobs[0].job_id)
        kept = runtime.recording(jobs[2].job_id)
    assert [step["routine"] for step in kept["steps"]] == ["quote"]
    assert kept["steps_dropped"] == 1


def test_bad_settings_and_lookups_are_named_errors() -> None:
    with pytest.raises(TypeError, match="record must be a bool or a RecordSettings"):
        Runtime(record="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_jobs must be a positive int"):
        RecordSettings(max_jobs=0)
    with Runtime() as runtime, pytest.raises(RecordingNotFoundError, match="records nothing"):
        runtime.recording("job-1")
    with Runtime(record=True) as runtime, pytest.raises(RecordingNotFoundError, match="job-1"):
        runtime.recording("job-1")
    with pytest.raises(RecordingFormatError, match="format"):
        replay({"steps": []}, _pricing_flow())


def test_an_unreplayable_input_is_listed_and_arrives_as_a_placeholder() -> None:
    echo = Routine()
    echo.add_slot("in")

    def echo_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("kind", type(slot_data["in"][0]).__name__)

    echo.set_logic(echo_logic)
    flow = Flow("echo")
    flow.add_routine(echo, "echo")
    registry = FlowRegistry()
    registry.register(flow)
    with Runtime(record=True, registry=registry) as runtime:
        _, job = runtime.post("echo", "echo", "in", _Coupon())
        assert job.wait(10)
        recording = runtime.recording(job.job_id)
    assert recording["unreplayable"] == [
        "entry.data (test_recording._Coupon)",
        "steps[0].slot_data.in[0] (test_recording._Coupon)",
    ]
    report = replay(recording, flow)
    assert report.divergence is not None
    assert report.divergence.part == "job_writes"  # the logic saw a placeholder, said so
    assert report.divergence.replayed == {"kind": "Unreplayable"}
    assert "values kept as repr only: entry.data" in report.summary()


# -- the command ------------------------------------------------------------------------------
def test_actorflow_replay_reports_and_exits_by_whether_the_run_was_reproduced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "failed.json"
    path.write_text(json.dumps(_record_a_failed_order(_pricing_flow())))
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """\
            import test_recording

            flow = test_recording._pricing_flow(discount=DISCOUNT)
            """
        ).replace("DISCOUNT", "0.1")
    )
    runner = CliRunner()
    same = runner.invoke(main, ["replay", str(path), f"{app}:flow", "--traceback"])
    assert same.exit_code == 0, same.output
    assert "reproduced" in same.output and "NOT" not in same.output
    assert "ValueError: total 108 is above the limit 100" in same.output
    assert "in total_logic" in same.output
    app.write_text(app.read_text().replace("0.1", "0.2"))
    changed = runner.invoke(main, ["replay", str(path), f"{app}:flow", "--json"])
    assert changed.exit_code == 1, changed.output
    report = json.loads(changed.output)
    assert report["reproduced"] is False
    assert report["divergence"]["part"] == "job_writes"
    path.write_text("{}")
    bad = runner.invoke(main, ["replay", str(path), f"{app}:flow"])
    assert bad.exit_code == 2 and "not an actorflow recording" in bad.output
