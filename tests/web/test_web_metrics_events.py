"""``/metrics`` (prometheus_client), ``/api/events`` (server-sent events), mounting the app,
``actorflow inspect`` and ``actorflow serve``, over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from web_kit import AUTH, TOKEN, WAIT, Served, orders_flow

from actorflow import Flow, FlowRegistry, Routine, Runtime
from actorflow.cli import main
from actorflow.web import WebServer, create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def scrape(client: httpx.Client) -> tuple[Samples, dict[str, str]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for s in family.samples:
            samples[sample(s.name, **s.labels)] = s.value
    return samples, types


# -- /metrics --------------------------------------------------------------------------------
def test_metrics_parse_and_hold_the_expected_counts(served: Served) -> None:
    samples, types = scrape(served.client)
    labels = {"worker": served.worker_id, "flow": "orders"}
    assert types == {
        "actorflow_jobs_active": "gauge",
        "actorflow_jobs_finished": "counter",
        "actorflow_worker_running": "gauge",
        "actorflow_worker_restarts": "counter",
        "actorflow_routine_handled": "counter",
        "actorflow_routine_failed": "counter",
        "actorflow_routine_retried": "counter",
        "actorflow_routine_mailbox_depth": "gauge",
        "actorflow_routine_handling_seconds": "histogram",
        "actorflow_dead_letters": "counter",
    }
    assert samples[sample("actorflow_jobs_active", **labels)] == 0
    for status, count in (("completed", 2), ("failed", 1), ("cancelled", 0)):
        assert samples[sample("actorflow_jobs_finished_total", status=status, **labels)] == count
    assert samples[sample("actorflow_worker_running", **labels)] == 1
    split = {**labels, "routine": "split"}
    price = {**labels, "routine": "price"}
    assert samples[sample("actorflow_routine_handled_total", **split)] == 2
    assert samples[sample("actorflow_routine_failed_total", **split)] == 3
    assert samples[sample("actorflow_routine_retried_total", **split)] == 2
    assert samples[sample("actorflow_routine_handled_total", **price)] == 3
    assert samples[sample("actorflow_routine_failed_total", **price)] == 1
    assert samples[sample("actorflow_routine_handling_seconds_count", **split)] == 5
    assert samples[sample("actorflow_routine_handling_seconds_bucket", le="+Inf", **price)] == 4
    assert samples[sample("actorflow_dead_letters_total", reason="skipped")] == 1


def test_the_hand_written_renderer_is_gone() -> None:
    root = Path(__file__).resolve().parents[2] / "actorflow"
    assert not (root / "monitor.py").exists()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "# HELP" not in text and "def prometheus_text" not in text, path


def test_label_values_are_escaped_by_prometheus_client(runtime: Runtime) -> None:
    odd = 'quote " backslash \\ newline \n end'
    runtime._book.dead_letter(None, None, None, None, odd)
    with WebServer(create_app(runtime)) as server, httpx.Client(base_url=server.url) as client:
        samples, _ = scrape(client)
        text = client.get("/metrics").text
    assert 'reason="quote \\" backslash \\\\ newline \\n end"' in text
    assert samples[sample("actorflow_dead_letters_total", reason=odd)] == 1


# -- /api/events -----------------------------------------------------------------------------
def _snapshots(lines: Any) -> Any:
    """The JSON of each ``snapshot`` event of a stream, as it comes."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "snapshot":
            yield json.loads(line.removeprefix("data: "))


def test_the_event_stream_delivers_an_update_after_a_job_is_submitted(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=WAIT) as reader:
        with reader.stream("GET", "/api/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            snapshots = _snapshots(stream.iter_lines())
            first = next(snapshots)
            assert first["metrics"]["jobs"]["completed"] == 2
            assert first["can_submit"] is True
            assert first["jobs"]["jobs"][0]["job_id"] == served.jobs[2].job_id
            body = {"routine": "split", "slot": "order", "data": ["pen"]}
            answer = served.client.post("/api/flows/orders/jobs", json=body, headers=AUTH)
            job_id = answer.json()["job_id"]
            for snapshot in snapshots:
                jobs = {job["job_id"]: job["status"] for job in snapshot["jobs"]["jobs"]}
                if jobs.get(job_id) == "completed":
                    break
            assert snapshot["metrics"]["jobs"]["completed"] == 3
            assert snapshot["jobs"]["jobs"][0]["job_id"] == job_id


def test_events_are_sent_only_on_change_and_at_a_bounded_rate(runtime: Runtime) -> None:
    """A flow whose job runs for a while: the stream carries at most one snapshot per
    interval, and nothing (but keep-alives) while nothing changes."""
    gate = threading.Event()
    slow = Routine()
    slow.add_slot("in")

    def slow_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        assert gate.wait(WAIT)

    slow.set_logic(slow_logic)
    flow = Flow("slow")
    flow.add_routine(slow, "slow")
    FlowRegistry.get_instance().register(flow)
    app = create_app(runtime, TOKEN, snapshot_interval=0.2)
    with WebServer(app) as server, httpx.Client(base_url=server.url, timeout=WAIT) as client:
        with client.stream("GET", "/api/events") as stream:
            lines = stream.iter_lines()
            snapshots = _snapshots(lines)
            next(snapshots)
            started = time.monotonic()
            numbers = []
            for n in range(30):  # 30 jobs, posted quickly while the stream is read
                runtime.post("slow", "slow", "in", n)
            gate.set()
            assert runtime.wait_until_all_jobs_finished(WAIT)
            for snapshot in snapshots:
                numbers.append(time.monotonic())
                if snapshot["metrics"]["jobs"]["completed"] == 30:
                    break
            took = time.monotonic() - started
            # no more snapshots than intervals passed (plus the first after the change)
            assert len(numbers) <= took / 0.2 + 2
    assert runtime.metrics()["jobs"]["completed"] == 30


# -- mounted in a service's app ----------------------------------------------------------------
def test_mounted_under_a_prefix_in_a_starlette_service(runtime: Runtime) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    orders_flow()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    service = Starlette(
        routes=[Route("/health", health), Mount("/actorflow", create_app(runtime, TOKEN))]
    )
    with WebServer(service) as server, httpx.Client(base_url=server.url, timeout=WAIT) as c:
        assert c.get("/health").json() == {"ok": True}
        body = {"routine": "split", "slot": "order", "data": ["pen"]}
        answer = c.post("/actorflow/api/flows/orders/jobs", json=body, headers=AUTH)
        assert answer.status_code == 202
        assert answer.headers["location"] == f"/actorflow/api/jobs/{answer.json()['job_id']}"
        job = runtime.get_job(answer.json()["job_id"])
        assert job is not None and job.wait(WAIT)
        assert c.get(answer.headers["location"]).json()["status"] == "completed"
        page = c.get("/actorflow/", follow_redirects=True)
        assert page.status_code == 200 and 'src="static/monitor.js"' in page.text
        assert c.get("/actorflow/static/monitor.js").status_code == 200
        assert "actorflow_jobs_active" in c.get("/actorflow/metrics").text


# -- the command line --------------------------------------------------------------------------
def test_actorflow_inspect_reads_the_app(served: Served) -> None:
    result = CliRunner().invoke(main, ["inspect", served.url, "--json"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.output)
    assert answers["errors"] == {}
    assert answers["workers"][0]["worker_id"] == served.worker_id
    assert answers["jobs"]["total"] == 3
    assert answers["dead-letters"]["by_reason"] == {"skipped": 1}
    table = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["inspect", served.url])
    assert table.exit_code == 0 and served.worker_id in table.output


def test_actorflow_serve_runs_a_flow_under_uvicorn(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "from actorflow import Flow, Routine\n"
        "echo = Routine()\n"
        "echo.add_slot('in')\n"
        "echo.set_logic(lambda slot_data, message, state: None)\n"
        "flow = Flow('served')\n"
        "flow.add_routine(echo, 'echo')\n",
        encoding="utf-8",
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "THE_TOKEN": TOKEN}
    command = [sys.executable, "-c", "from actorflow.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, f"{app}:flow", "--port", "0", "--token-env", "THE_TOKEN"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving flow 'served' at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=WAIT) as client:
            assert [flow["flow_id"] for flow in client.get("/api/flows").json()] == ["served"]
            body = {"routine": "echo", "slot": "in", "data": 1}
            assert client.post("/api/flows/served/jobs", json=body).status_code == 401
            answer = client.post("/api/flows/served/jobs", json=body, headers=AUTH)
            assert answer.status_code == 202
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    missing = subprocess.run(
        [*command, f"{app}:flow", "--token-env", "NOT_SET_ANYWHERE"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "NOT_SET_ANYWHERE is not set or empty" in missing.stderr


def test_a_snapshot_is_renumbered_only_when_it_changed() -> None:
    from actorflow.web._events import SharedSnapshot

    state = {"n": 0}
    made: list[int] = []

    def make() -> dict[str, int]:
        made.append(1)
        return dict(state)

    snapshot = SharedSnapshot(make, interval=0.0)
    first = snapshot.current()
    assert [snapshot.current() for _ in range(5)] == [first] * 5 and first[0] == 1
    state["n"] = 1
    assert snapshot.current() == (2, '{"n": 1}')
    slow = SharedSnapshot(make, interval=3600.0)
    calls = len(made)
    assert slow.current() == slow.current() == (1, '{"n": 1}')
    assert len(made) == calls + 1  # looked at once within the interval, however often asked


def test_event_streams_take_no_thread_per_client(served: Served) -> None:
    before = threading.active_count()
    with httpx.Client(base_url=served.url, timeout=WAIT) as client:
        streams = [client.stream("GET", "/api/events") for _ in range(8)]
        opened = [stream.__enter__() for stream in streams]
        try:
            for response in opened:
                assert next(_snapshots(response.iter_lines()))["metrics"]["jobs"]["completed"]
            assert threading.active_count() <= before + 1
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
