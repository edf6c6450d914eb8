"""The actorflow command: run, graph, chaos, bench, inspect, usage errors, the console script."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import actorflow
from actorflow import Runtime
from actorflow import cli as cli_module
from actorflow import graph as graph_module
from actorflow.cli import main

APP = '''\
from actorflow import Flow, Routine, batch_size_policy, get_current_job


class Parse(Routine):
    def __init__(self):
        super().__init__()
        self.add_slot("line")
        self.add_event("parsed")

    def logic(self, slot_data, policy_message, worker_state):
        for line in slot_data["line"]:
            name, quantity = line.split(",")
            self.emit("parsed", name=name, quantity=int(quantity))


class Store(Routine):
    def __init__(self):
        super().__init__()
        self.add_slot("item")

    def logic(self, slot_data, policy_message, worker_state):
        job = get_current_job()
        if job.metadata.get("fail"):
            raise RuntimeError("asked to fail")
        for item in slot_data["item"]:
            worker_state.increment("store", item["name"], item["quantity"])


class Gather(Routine):
    """Waits for a second data point that never comes (a job that outlives --timeout)."""

    def __init__(self):
        super().__init__()
        self.add_slot("item")
        self.set_activation_policy(batch_size_policy(2, timeout=60))

    def logic(self, slot_data, policy_message, worker_state):
        pass


def build(flow_id="inventory"):
    flow = Flow(flow_id)
    flow.add_routine(Parse(), "parse")
    flow.add_routine(Store(), "store")
    flow.connect("parse", "parsed", "store", "item")
    return flow


flow = build()
slow = Flow("slow")
slow.add_routine(Gather(), "gather")
not_a_flow = 42
'''

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command puts app directories on sys.path and app modules in sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("cli_app_", "_actorflow_target_")):
            del sys.modules[name]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An application module holding the flows ``flow`` and ``slow`` and a factory ``build``."""
    path = tmp_path / f"cli_app_{next(_names)}.py"
    path.write_text(APP, encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="actorflow", catch_exceptions=False)


def run_json(*args: str) -> tuple[Result, dict[str, Any]]:
    result = invoke(*args, "--json")
    return result, json.loads(result.stdout)


# -- run ---------------------------------------------------------------------------------------
def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"actorflow {actorflow.__version__}\n"


def test_run_prints_a_summary_table(app: Path) -> None:
    result = invoke("run", f"{app}:flow", "--post", 'parse.line="pen,3"', "--jobs", "4")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "flow inventory: jobs"
    for label, value in (("posted", "4"), ("completed", "4"), ("failed", "0")):
        assert any(label in line and line.rstrip(" │").endswith(value) for line in lines), label
    assert "latency p50 ms" in result.stdout and "latency p99 ms" in result.stdout


def test_run_json_counts_every_job_and_reports_latency(app: Path) -> None:
    result, summary = run_json(
        "run", f"{app}:flow", "--post", 'parse.line="pen,3"', "--post", 'parse.line="ink,1"',
        "-n", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {k: summary[k] for k in ("flow", "posted", "completed", "failed", "cancelled")} == {
        "flow": "inventory", "posted": 6, "completed": 6, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    assert summary["unfinished"] == 0 and summary["errors"] == {}
    assert 0 <= summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    if hasattr(Runtime, "metrics"):
        assert summary["routines"] == {
            "parse": {"handled": 6, "failed": 0},
            "store": {"handled": 6, "failed": 0},
        }
    else:
        assert summary["routines"] is None


def test_run_sums_per_routine_counts_of_every_worker_from_metrics(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def figures(handled: int, failed: int) -> dict[str, Any]:
        return {"handled": handled, "failed": failed, "retried": 0, "mailbox_depth": 0,
                "handling_seconds": {"count": handled + failed, "sum": 0.0, "buckets": {}}}  # fmt: skip

    def metrics(self: Runtime) -> dict[str, Any]:
        return {
            "jobs": {"active": 0, "completed": 1, "failed": 0, "cancelled": 0},
            "workers": {},
            "routines": {
                "w1": {"parse": figures(2, 1), "store": figures(2, 0)},
                "w2": {"parse": figures(3, 0)},
            },
            "dead_letters": {"total": 0, "by_reason": {}},
        }

    monkeypatch.setattr(Runtime, "metrics", metrics, raising=False)
    result, summary = run_json("run", f"{app}:flow", "--post", 'parse.line="pen,3"')
    assert result.exit_code == 0
    assert summary["routines"] == {
        "parse": {"handled": 5, "failed": 1},
        "store": {"handled": 2, "failed": 0},
    }
    table = invoke("run", f"{app}:flow", "--post", 'parse.line="pen,3"').stdout
    rows = [line.strip("│ ").split("│") for line in table.splitlines() if "│ parse" in line]
    assert [[cell.strip() for cell in row] for row in rows] == [["parse", "5", "1"]]


def test_run_exits_1_when_a_job_fails(app: Path) -> None:
    result, summary = run_json(
        "run", f"{app}:flow", "--post", 'parse.line="pen,3"', "--post", 'parse.line="pen,x"'
    )
    assert result.exit_code == 1
    assert (summary["completed"], summary["failed"]) == (1, 1)
    assert summary["errors"] == {"ValueError: invalid literal for int() with base 10: 'x'": 1}


def test_run_passes_metadata_to_every_job(app: Path) -> None:
    args = ("run", f"{app}:flow", "--post", 'parse.line="pen,3"', "-n", "2")
    result, summary = run_json(*args, "--metadata", '{"fail": true}')
    assert result.exit_code == 1
    assert summary["failed"] == 2
    assert summary["errors"] == {"RuntimeError: asked to fail": 2}
    result, summary = run_json(*args, "--metadata", '{"fail": false}')
    assert result.exit_code == 0 and summary["completed"] == 2


def test_run_timeout_fails_a_job_that_does_not_end(app: Path) -> None:
    result, summary = run_json("run", f"{app}:slow", "--post", "gather.item=1", "--timeout", "0.2")
    assert result.exit_code == 1
    assert summary["failed"] == 1
    assert list(summary["errors"]) == ["JobTimeoutError: job <job> timed out after 0.2 s"]


def test_run_a_factory_function_and_a_module_name(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, summary = run_json("run", f"{app}:build", "--post", 'parse.line="a,1"')
    assert result.exit_code == 0 and summary["flow"] == "inventory"
    monkeypatch.chdir(app.parent)
    result, summary = run_json("run", f"{app.stem}:flow", "--post", 'parse.line="a,1"')
    assert result.exit_code == 0 and summary["completed"] == 1


def test_run_a_flow_file(app: Path, tmp_path: Path) -> None:
    flow_file = tmp_path / "orders.yml"
    flow_file.write_text(
        textwrap.dedent(
            f"""\
            routines:
              parse: {app.stem}:Parse
              store: {{class: {app.stem}:Store, concurrency: 2}}
            connections:
              - {{from: parse.parsed, to: store.item}}
            """
        ),
        encoding="utf-8",
    )
    result, summary = run_json("run", str(flow_file), "--post", 'parse.line="pen,3"', "-n", "5")
    assert result.exit_code == 0, result.output
    assert (summary["flow"], summary["completed"]) == ("orders", 5)


def test_run_a_module_with_a_single_flow_needs_no_name(tmp_path: Path) -> None:
    path = tmp_path / f"cli_app_{next(_names)}.py"
    path.write_text(APP.replace('slow = Flow("slow")', "slow = None").replace(
        'slow.add_routine(Gather(), "gather")', ""
    ), encoding="utf-8")  # fmt: skip
    result, summary = run_json("run", str(path), "--post", 'parse.line="pen,3"')
    assert result.exit_code == 0 and summary["flow"] == "inventory"


# -- usage errors ----------------------------------------------------------------------------
USAGE_ERRORS = [
    # (arguments, where {app} is the app module's path, message)
    (["run", "{app}:nope", "--post", "parse.line=1"], "Invalid value for TARGET: {app} has no attribute 'nope'"),
    (["run", "{app}:not_a_flow", "--post", "parse.line=1"], "{app}:not_a_flow is an int, not a Flow"),
    (["run", "{app}", "--post", "parse.line=1"], "{app} defines several flows (flow, slow); pick one as {app}:NAME"),
    (["run", "missing_app.py:flow", "--post", "parse.line=1"], "no such file: missing_app.py"),
    (["run", "no_such_module_xyz:flow", "--post", "a.b=1"], "no module named 'no_such_module_xyz'"),
    (["run", "missing.yaml", "--post", "a.b=1"], "no such flow file: missing.yaml"),
    (["run", "orders.yaml:flow", "--post", "a.b=1"], "a flow file takes no :NAME (write orders.yaml)"),
    (["run", ":flow", "--post", "a.b=1"], "is not path/to/app.py:flow, package.module:flow or a flow file"),
    (["run", "{app}:flow"], "Missing option '--post'"),
    (["run", "{app}:flow", "--post", "parse.line"], "'parse.line' is not ROUTINE.SLOT=JSON"),
    (["run", "{app}:flow", "--post", "parse=1"], "'parse=1' is not ROUTINE.SLOT=JSON"),
    (["run", "{app}:flow", "--post", "parse.line=pen,3"],
     "parse.line: the data 'pen,3' is not JSON (Expecting value, column 1); a string needs its quotes"),
    (["run", "{app}:flow", "--post", "pars.line=1"],
     "--post pars.line: flow 'inventory' has no routine 'pars' (routines: parse, store)"),
    (["run", "{app}:flow", "--post", "parse.lines=1"],
     "--post parse.lines: routine 'parse' has no slot 'lines' (slots: line)"),
    (["run", "{app}:flow", "--post", "parse.line=1", "--metadata", "[1]"], "must be a JSON object"),
    (["run", "{app}:flow", "--post", "parse.line=1", "--metadata", "nope"], "not JSON"),
    (["run", "{app}:flow", "--post", "parse.line=1", "--jobs", "0"], "0 is not in the range x>=1"),
    (["graph", "{app}:flow", "--format", "png"], "'png' is not one of 'mermaid', 'dot', 'svg'"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--crash", "nobody:3"],
     "Invalid value for --crash: flow 'inventory' has no routine 'nobody' (routines: parse, store)"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--crash", "store"], "'store' is not ROUTINE:N"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--crash", "store:1.5"], "'store:1.5' is not ROUTINE:N"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--raise", "0.5"], "'0.5' is not ROUTINE:P"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--drop", "2"],
     "a fault probability must be between 0 and 1, got 2.0"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--delay", "store:-1"],
     "delay: seconds must be a finite number of seconds >= 0 and at most"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--duplicate", "store:lots"],
     "'store:lots' is not [ROUTINE:]NUMBER"),
    (["inspect", "ftp://example.invalid"], "'ftp://example.invalid' is not an http(s) URL"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--kill-node-at", "2s"],
     "--kill-node-at needs --backend ray"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--nodes", "4"], "--nodes needs --backend ray"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--backend", "ray", "--nodes", "1"],
     "1 is not in the range x>=2"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--backend", "ray", "--deterministic"],
     "--deterministic needs the thread backend"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--backend", "ray", "--kill-node-at", "soon"],
     "'soon' is not a duration"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--kill-state-owner-at", "1"],
     "--kill-state-owner-at needs --backend ray"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--backend", "ray", "--kill-routine-at", "nobody:1"],
     "Invalid value for --kill-routine-at: flow 'inventory' has no routine 'nobody' (routines: parse, store)"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--backend", "ray", "--kill-routine-at", "store"],
     "'store' is not ROUTINE:SECONDS"),
    (["chaos", "{app}:flow", "--post", "parse.line=1", "--backend", "ray", "--kill-routine-at", "store:-1"],
     "Invalid value: S must be a finite number of seconds > 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS]
)
def test_usage_errors_exit_2_with_a_clear_message(app: Path, args: list[str], message: str) -> None:
    result = invoke(*(arg.format(app=app) for arg in args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ")
    assert message.format(app=app) in " ".join(result.stderr.split()), result.stderr


def test_an_exception_in_the_app_module_is_a_usage_error_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / f"cli_app_{next(_names)}.py"
    path.write_text("import json\n\nraise RuntimeError('no config')\n", encoding="utf-8")
    result = invoke("graph", f"{path}:flow")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"importing {path} raised RuntimeError: no config (at {path}:3)" in result.stderr


# -- graph -----------------------------------------------------------------------------------
def test_graph_prints_mermaid_by_default(app: Path) -> None:
    result = invoke("graph", f"{app}:flow")
    assert result.exit_code == 0
    assert result.stdout == (
        "flowchart LR\n"
        "    %% flow inventory\n"
        '    r_parse["parse<br/>slots: line<br/>events: parsed"]\n'
        '    r_store["store<br/>slots: item"]\n'
        '    r_parse -->|"parsed → item"| r_store\n'
    )


def test_graph_writes_dot_to_a_file(app: Path, tmp_path: Path) -> None:
    out = tmp_path / "flow.dot"
    result = invoke("graph", f"{app}:flow", "--format", "dot", "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == f"wrote {out}\n"
    text = out.read_text(encoding="utf-8")
    assert text.startswith('digraph "inventory" {\n')
    assert '    "parse" -> "store" [label="parsed → item"];\n' in text


def test_graph_svg_without_graphviz_says_what_to_do(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: None)
    result = invoke("graph", f"{app}:flow", "--format", "svg")
    assert result.exit_code == 1
    assert "apt-get install graphviz" in result.stderr
    assert "use the mermaid or dot format instead" in result.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not on PATH")
def test_graph_svg(app: Path) -> None:
    result = invoke("graph", f"{app}:flow", "--format", "svg")
    assert result.exit_code == 0 and "<svg" in result.stdout


# -- chaos -----------------------------------------------------------------------------------
CHAOS = (
    "--post", 'parse.line="pen,3"', "--jobs", "60", "--drop", "0.1", "--duplicate", "store:0.1",
    "--delay", "parse:0.01", "--crash", "store:20", "--raise", "parse:0.2", "--seed", "2",
    "--deterministic",
)  # fmt: skip


def test_chaos_reports_the_experiment_and_replays_with_the_seed(app: Path) -> None:
    result, report = run_json("chaos", f"{app}:flow", *CHAOS)
    assert result.exit_code == 0, result.output
    assert report["flow"] == "inventory" and report["posted"] == 60
    assert report["baseline"]["completed"] == 60
    assert report["completed"] + report["failed"] + report["cancelled"] == 60
    assert report["steady_state_before"] is True and report["steady_state_after"] is True
    assert report["fault_plan"] == {
        "seed": 2,
        "rules": ["0:drop", "1:delay", "2:duplicate", "3:crash", "4:raise"],
    }
    assert set(report["faults_injected"]) == {
        "0:drop",
        "1:delay",
        "2:duplicate",
        "3:crash",
        "4:raise",
    }
    assert "InjectedFault: fault injected by actorflow chaos" in report["errors"]
    again = invoke("chaos", f"{app}:flow", *CHAOS, "--json")
    assert json.loads(again.stdout) == report


def test_chaos_prints_a_table(app: Path) -> None:
    result = invoke("chaos", f"{app}:flow", *CHAOS)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "without faults" in out and "under faults" in out
    assert "faults injected:\n  0:drop: " in out
    assert "steady state (every job ended) under faults: True" in out


def test_chaos_without_faults_runs_the_workload_twice(app: Path) -> None:
    result, report = run_json(
        "chaos", f"{app}:flow", "--post", 'parse.line="pen,3"', "-n", "5", "--deterministic"
    )
    assert result.exit_code == 0
    assert (report["completed"], report["baseline"]["completed"]) == (5, 5)
    assert report["faults_injected"] == {}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_chaos_on_a_local_ray_cluster_loses_a_node_and_reports_it(
    app: Path, tmp_path: Path
) -> None:
    """A real 2-node cluster in a process of its own: the state owner's process is killed 0.5 s
    in, one of store's actors 1 s in, and the node running the routine actors goes 1.5 s in;
    the report says so, every job ended and each is counted once."""
    report_dir = tmp_path / "report"
    command = [
        sys.executable, "-m", "actorflow", "chaos", f"{app}:flow", "--post", 'parse.line="pen,3"',
        "--jobs", "200", "--rate", "100", "--backend", "ray", "--nodes", "2",
        "--kill-state-owner-at", "0.5s", "--state-file", "state.db",
        "--kill-routine-at", "store:1s",
        "--kill-node-at", "1.5s", "--timeout", "120", "--report", str(report_dir),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=540, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    summary = (report_dir / "summary.txt").read_text(encoding="utf-8")
    assert result.stdout.strip() == summary.strip()
    run = report["run"]
    assert run["posted"] == 200 and run["unfinished"] == 0
    assert run["completed"] + run["failed"] + run["cancelled"] == 200
    assert report["baseline"]["completed"] == 200
    loss = report["node_loss"]
    assert loss["routines"] and loss["jobs_in_flight"] > 0
    assert sum(loss["outcomes"].values()) == loss["jobs_in_flight"]
    assert [f["fault"] for f in report["faults"]] == [
        "state owner killed",
        "routine actor killed",
        "node removed",
    ]
    assert [f["where"] for f in report["faults"][:2]] == ["state owner of experiment", "store[0]"]
    assert (tmp_path / "state.db").exists()
    assert report["steady_state_before"] is True and report["steady_state_after"] is True
    assert "<- node removed" in summary
    assert "steady-state hypothesis: every job ended" in summary


# -- inspect ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_inspect_an_unreachable_service(app: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("inspect", url, "--timeout", "5")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: cannot reach {url}/api/workers: ")


MONITOR = {
    "/api/workers": [
        {"worker_id": "w1", "flow_id": "orders", "status": "running", "restarts": 0,
         "jobs": {"completed": 10, "failed": 1, "cancelled": 0}},
    ],
    "/api/jobs": {"jobs": [{"job_id": "job-1", "status": "completed"},
                           {"job_id": "job-2", "status": "failed", "error": "ValueError: x"}],
                  "total": 2},
    "/api/metrics": {
        "jobs": {"active": 0, "completed": 10, "failed": 1, "cancelled": 0},
        "workers": {"w1": {"flow_id": "orders", "status": "running", "restarts": 0,
                           "jobs": {"completed": 10, "failed": 1, "cancelled": 0}}},
        "routines": {"w1": {"parse": {
            "handled": 11, "failed": 1, "retried": 2, "mailbox_depth": 0,
            "handling_seconds": {"count": 11, "sum": 0.0022,
                                 "buckets": {"0.0001": 2, "0.0005": 8, "0.001": 1, "+Inf": 0}},
        }}},
        "dead_letters": {"total": 1, "by_reason": {"job failed": 1}},
    },
}  # fmt: skip


@pytest.fixture
def monitor() -> Iterator[str]:
    """A stand-in monitoring endpoint on loopback (dead-letters answers 500)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = MONITOR.get(self.path)
            body = json.dumps(payload).encode() if payload is not None else b"boom"
            self.send_response(200 if payload is not None else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_inspect_prints_tables_and_reports_a_failing_endpoint(monitor: str) -> None:
    result = CliRunner(env={"COLUMNS": "160"}).invoke(main, ["inspect", monitor + "/api/"])
    assert result.exit_code == 1  # /api/dead-letters answered 500
    out = result.stdout
    for title in ("workers", "jobs / jobs", "metrics / jobs", "metrics / workers",
                  "metrics / dead_letters", "metrics / routines"):  # fmt: skip
        assert f"\n{title}" in "\n" + out, title
    assert "jobs.completed" in out and "ValueError: x" in out
    assert "by_reason.job failed" in out
    routine_row = next(line for line in out.splitlines() if "│ parse" in line)
    assert [cell.strip() for cell in routine_row.strip("│ ").split("│")] == [
        "w1", "parse", "11", "1", "2", "0", "0.200", "<= 1",
    ]  # fmt: skip
    assert result.stderr == f"error: {monitor}/api/dead-letters: HTTP 500 Internal Server Error\n"


def test_inspect_json(monitor: str) -> None:
    result = invoke("inspect", monitor, "--json")
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("workers", "jobs", "metrics")} == {
        k.split("/")[-1]: v for k, v in MONITOR.items()
    }
    assert data["errors"] == {
        "dead-letters": f"{monitor}/api/dead-letters: HTTP 500 Internal Server Error"
    }


# -- bench -----------------------------------------------------------------------------------
def test_bench_without_the_benchmarks_says_where_they_are(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli_module, "benchmark_script", lambda: tmp_path / "run_all.py")
    result = invoke("bench")
    assert result.exit_code == 1
    assert "the benchmarks ship with actorflow's source repository" in result.stderr


def test_bench_runs_the_script_and_passes_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "benchmarks" / "run_all.py"
    script.parent.mkdir()
    script.write_text(
        "import pathlib, sys\n"
        "pathlib.Path(sys.argv[0]).with_name('args.json').write_text(repr(sys.argv[1:]))\n"
        "sys.exit(3)\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(cli_module, "benchmark_script", lambda: script)
    result = invoke("bench", "--quick")
    assert result.exit_code == 3
    assert (script.parent / "args.json").read_text() == "['--quick']"


# -- the installed console script ------------------------------------------------------------
def console_script() -> str:
    beside_python = Path(sys.executable).parent / "actorflow"
    found = str(beside_python) if beside_python.exists() else shutil.which("actorflow")
    if found is None:
        pytest.fail("the actorflow console script is not installed: run pip install -e .")
    return found


def test_the_console_script_runs_an_app(tmp_path: Path) -> None:
    (tmp_path / "shop_app.py").write_text(APP, encoding="utf-8")
    env = {**os.environ, "ACTORFLOW_STRICT": "1", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [console_script(), "run", "shop_app.py:flow", "--post", 'parse.line="pen,3"',
         "--jobs", "3", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["flow"], summary["posted"], summary["completed"]) == ("inventory", 3, 3)
    failing = subprocess.run(
        [console_script(), "run", "shop_app.py:flow", "--post", "parse.nope=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert failing.returncode == 2
    assert "Traceback" not in failing.stderr
    assert "routine 'parse' has no slot 'nope' (slots: line)" in failing.stderr


def test_chaos_takes_a_fault_plan_file_and_adds_the_options_rules_after_it(
    app: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "seed: 2\nfaults:\n  - drop: {p: 0.1}\n  - crash: {routine: store, on_message: 20}\n"
    )
    args = ("--post", 'parse.line="pen,3"', "--jobs", "60", "--deterministic")
    result, report = run_json(
        "chaos", f"{app}:flow", *args, "--faults", str(plan), "--raise", "parse:0.2"
    )
    assert result.exit_code == 0, result.output
    assert report["fault_plan"] == {"seed": 2, "rules": ["0:drop", "1:crash", "2:raise"]}
    assert set(report["faults_injected"]) == {"0:drop", "1:crash", "2:raise"}
    assert report["completed"] + report["failed"] + report["cancelled"] == 60
    _, reseeded = run_json("chaos", f"{app}:flow", *args, "--faults", str(plan), "--seed", "9")
    assert reseeded["fault_plan"]["seed"] == 9


def test_chaos_refuses_a_fault_plan_file_naming_a_routine_the_flow_lacks(
    app: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("faults:\n  - drop: {routine: stor}\n")
    result = invoke("chaos", f"{app}:flow", "--post", 'parse.line="pen,3"', "--faults", str(plan))
    assert result.exit_code == 2
    assert (
        "rule 0:drop names routine(s) 'stor' that flow 'inventory' does not have "
        "(routines: parse, store)"
    ) in " ".join(result.output.split())


def test_chaos_reports_a_bad_fault_plan_file_with_its_line(app: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("faults:\n  - dorp: {p: 0.1}\n")
    result = invoke("chaos", f"{app}:flow", "--post", 'parse.line="pen,3"', "--faults", str(plan))
    assert result.exit_code == 2
    output = "".join(result.output.split())  # the message is wrapped to the terminal's width
    assert f"Invalidvaluefor--faults:{plan}:2:unknownfaultkind'dorp'" in output, result.output
