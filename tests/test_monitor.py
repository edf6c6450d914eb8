"""The monitoring endpoint over real HTTP: JSON API, Prometheus text, the page in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from actorflow import (
    ConfigurationError,
    Flow,
    FlowRegistry,
    JobContext,
    Routine,
    Runtime,
    RuntimeClosedError,
)
from actorflow.cli import main
from actorflow.graph import flow_to_mermaid
from actorflow.monitor import MonitorServer, prometheus_text

CHROMIUM = Path("/usr/bin/chromium")
WAIT = 10.0


# -- a small flow and a known workload -------------------------------------------------------
def orders_flow() -> Flow:
    """``split`` (retries twice, then fails the job) emits one ``line`` per item to ``price``
    (skips what it cannot price: the job goes on, the message is a ``skipped`` dead letter)."""
    split = Routine()
    split.add_slot("order")
    split.add_event("line", ["item"])

    def split_order(slot_data: dict[str, list[Any]], policy_message: Any, state: Any) -> None:
        for order in slot_data["order"]:
            if not order:
                raise ValueError("empty order")
            for item in order:
                split.emit("line", item=item)

    split.set_logic(split_order)
    split.set_error_handler("retry", max_retries=2, delay=0.0)
    price = Routine()
    price.add_slot("line")

    def price_line(slot_data: dict[str, list[Any]], policy_message: Any, state: Any) -> None:
        for message in slot_data["line"]:
            if message["item"] == "broken":
                raise ValueError("cannot price 'broken'")

    price.set_logic(price_line)
    price.set_error_handler("skip")
    flow = Flow("orders")
    flow.add_routine(split, "split")
    flow.add_routine(price, "price")
    flow.connect("split", "line", "price", "line")
    FlowRegistry.get_instance().register(flow)
    return flow


@dataclass
class Served:
    runtime: Runtime
    monitor: MonitorServer
    flow: Flow
    worker_id: str
    jobs: list[JobContext]

    @property
    def url(self) -> str:
        return self.monitor.url


@pytest.fixture
def served(runtime: Runtime) -> Served:
    """The orders flow after three jobs: completed, completed (one skipped line), failed."""
    flow = orders_flow()
    monitor = runtime.serve_monitor()
    jobs = [
        runtime.post("orders", "split", "order", order)[1]
        for order in (["pen", "ink"], ["pen", "broken"], [])
    ]
    for job in jobs:
        assert job.wait(WAIT)
    assert runtime.wait_until_all_jobs_finished(WAIT)
    assert [job.status.value for job in jobs] == ["completed", "completed", "failed"]
    return Served(runtime, monitor, flow, jobs[0].worker_id, jobs)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json; charset=utf-8"
        assert int(self.headers["Content-Length"]) == len(self.body)
        return json.loads(self.body.decode("utf-8"))


def fetch(url: str, method: str = "GET") -> Answer:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, dict(exc.headers), exc.read())


def get_json(url: str) -> Any:
    answer = fetch(url)
    assert answer.status == 200, answer.body
    return answer.json()


# -- the JSON API ----------------------------------------------------------------------------
def test_serve_monitor_listens_on_loopback_from_a_named_daemon_thread(served: Served) -> None:
    monitor = served.monitor
    assert monitor.host == "127.0.0.1" and monitor.port > 0
    assert monitor.url == f"http://127.0.0.1:{monitor.port}"
    assert monitor.running and repr(monitor) == f"MonitorServer({monitor.url}, running)"
    threads = [t for t in threading.enumerate() if t.name == "actorflow-monitor"]
    assert len(threads) == 1 and threads[0].daemon


def test_workers(served: Served) -> None:
    assert get_json(served.url + "/api/workers") == [
        {
            "worker_id": served.worker_id,
            "flow_id": "orders",
            "status": "running",
            "restarts": 0,
            "jobs": {"active": 0, "completed": 2, "failed": 1, "cancelled": 0},
        }
    ]


def test_jobs_newest_first_with_iso_times(served: Served) -> None:
    answer = get_json(served.url + "/api/jobs")
    assert answer["total"] == 3
    jobs = answer["jobs"]
    assert [job["job_id"] for job in jobs] == [job.job_id for job in reversed(served.jobs)]
    assert [(j["flow_id"], j["worker_id"], j["status"], j["error"]) for j in jobs] == [
        ("orders", served.worker_id, "failed", "ValueError: empty order (after 3 tries)"),
        ("orders", served.worker_id, "completed", None),
        ("orders", served.worker_id, "completed", None),
    ]
    for job, context in zip(jobs, reversed(served.jobs), strict=True):
        created = datetime.fromisoformat(job["created_at"])
        completed = datetime.fromisoformat(job["completed_at"])
        assert created == context.created_at and completed == context.completed_at
        assert created.utcoffset() is not None and created <= completed
        assert job["duration_ms"] == pytest.approx(
            (completed - created).total_seconds() * 1000, abs=0.001
        )


def test_jobs_filtered_and_limited(served: Served) -> None:
    failed = get_json(served.url + "/api/jobs?status=failed")
    assert failed["total"] == 1
    assert [job["job_id"] for job in failed["jobs"]] == [served.jobs[2].job_id]
    newest = get_json(served.url + "/api/jobs?status=completed&limit=1")
    assert newest["total"] == 2
    assert [job["job_id"] for job in newest["jobs"]] == [served.jobs[1].job_id]
    assert get_json(served.url + "/api/jobs?limit=0") == {"jobs": [], "total": 3}
    assert get_json(served.url + "/api/jobs?status=&limit=")["total"] == 3
    assert get_json(served.url + "/api/jobs?status=running") == {"jobs": [], "total": 0}


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("status=lost", "unknown status 'lost' (choose pending, running, completed, failed, "
                        "cancelled)"),
        ("limit=-1", "limit must be an int >= 0, got '-1'"),
        ("limit=many", "limit must be an int >= 0, got 'many'"),
    ],
)  # fmt: skip
def test_jobs_with_a_bad_query_answer_400(served: Served, query: str, error: str) -> None:
    answer = fetch(f"{served.url}/api/jobs?{query}")
    assert (answer.status, answer.json()) == (400, {"error": error})


def test_metrics_are_runtime_metrics(served: Served) -> None:
    metrics = get_json(served.url + "/api/metrics")
    assert metrics == json.loads(json.dumps(served.runtime.metrics()))
    assert metrics["jobs"] == {"active": 0, "completed": 2, "failed": 1, "cancelled": 0}
    routines = metrics["routines"][served.worker_id]
    figures = {
        rid: (r["handled"], r["failed"], r["retried"], r["mailbox_depth"])
        for rid, r in routines.items()
    }
    assert figures == {"split": (2, 3, 2, 0), "price": (3, 1, 0, 0)}
    assert metrics["dead_letters"] == {"total": 1, "by_reason": {"skipped": 1}}


def test_dead_letters(served: Served) -> None:
    assert get_json(served.url + "/api/dead-letters") == {
        "total": 1,
        "by_reason": {"skipped": 1},
        "recent": [
            {
                "job_id": served.jobs[1].job_id,
                "worker_id": served.worker_id,
                "routine_id": "price",
                "slot": None,
                "reason": "skipped",
            }
        ],
    }
    assert get_json(served.url + "/api/dead-letters?limit=0")["recent"] == []


def test_flows(served: Served) -> None:
    served.runtime.exec("orders", "second")
    assert get_json(served.url + "/api/flows") == [
        {
            "flow_id": "orders",
            "workers": [served.worker_id, "second"],
            "routines": [
                {"routine_id": "price", "slots": ["line"], "events": []},
                {"routine_id": "split", "slots": ["order"], "events": ["line"]},
            ],
            "connections": [
                {"source": "split", "event": "line", "target": "price", "slot": "line"}
            ],
            "mermaid": flow_to_mermaid(served.flow),
        }
    ]


def test_unknown_paths_and_other_methods_answer_json_errors(served: Served) -> None:
    missing = fetch(served.url + "/api/nothing")
    assert (missing.status, missing.json()) == (404, {"error": "no such path: /api/nothing"})
    assert fetch(served.url + "/favicon.ico").status == 404
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = fetch(served.url + "/api/workers", method)
        assert answer.status == 405 and answer.headers["Allow"] == "GET"
        assert answer.json() == {"error": f"method {method} not allowed (only GET)"}
    head = fetch(served.url + "/api/workers", "HEAD")
    assert head.status == 405 and head.body == b""


def test_counts_while_jobs_are_in_flight(runtime: Runtime) -> None:
    """A job held inside a routine is active; the one behind it waits in the mailbox."""
    started, release = threading.Event(), threading.Event()
    hold = Routine()
    hold.add_slot("item")

    def hold_logic(slot_data: dict[str, list[Any]], policy_message: Any, state: Any) -> None:
        started.set()
        assert release.wait(WAIT)

    hold.set_logic(hold_logic)
    flow = Flow("held")
    flow.add_routine(hold, "hold")
    FlowRegistry.get_instance().register(flow)
    monitor = runtime.serve_monitor()
    _, first = runtime.post("held", "hold", "item", 1)
    assert started.wait(WAIT)
    _, second = runtime.post("held", "hold", "item", 2)
    try:
        workers = get_json(monitor.url + "/api/workers")
        assert workers[0]["jobs"] == {"active": 2, "completed": 0, "failed": 0, "cancelled": 0}
        running = get_json(monitor.url + "/api/jobs?status=running")
        assert [job["job_id"] for job in running["jobs"]] == [first.job_id]
        assert running["jobs"][0]["completed_at"] is None
        assert running["jobs"][0]["duration_ms"] is None
        samples = parse_prometheus(fetch(monitor.url + "/metrics").body.decode())[0]
        labels = {"worker": first.worker_id, "flow": "held"}
        assert samples[sample("actorflow_jobs_active", **labels)] == 2
        assert samples[sample("actorflow_routine_mailbox_depth", routine="hold", **labels)] == 1
    finally:
        release.set()
    assert first.wait(WAIT) and second.wait(WAIT)


# -- Prometheus ------------------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)",?')


def small_parser(text: str) -> tuple[Samples, dict[str, str]]:
    """The text exposition format, enough of it for these tests (no timestamps)."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, line
        labels = {
            m["key"]: m["value"].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for m in _LABEL.finditer(match["labels"] or "")
        }
        samples[sample(match["name"], **labels)] = float(match["value"])
    return samples, types


def parse_prometheus(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels) and families' types, read by prometheus_client if installed."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return small_parser(text)
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[sample(s.name, **s.labels)] = s.value
    return samples, types


def test_prometheus_endpoint(served: Served) -> None:
    answer = fetch(served.url + "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    samples, types = parse_prometheus(answer.body.decode("utf-8"))
    worker = {"worker": served.worker_id, "flow": "orders"}
    split = {**worker, "routine": "split"}
    price = {**worker, "routine": "price"}
    expected = {
        sample("actorflow_jobs_active", **worker): 0,
        sample("actorflow_jobs_finished_total", status="completed", **worker): 2,
        sample("actorflow_jobs_finished_total", status="failed", **worker): 1,
        sample("actorflow_jobs_finished_total", status="cancelled", **worker): 0,
        sample("actorflow_worker_running", **worker): 1,
        sample("actorflow_worker_restarts_total", **worker): 0,
        sample("actorflow_routine_handled_total", **split): 2,
        sample("actorflow_routine_failed_total", **split): 3,
        sample("actorflow_routine_retried_total", **split): 2,
        sample("actorflow_routine_mailbox_depth", **split): 0,
        sample("actorflow_routine_handled_total", **price): 3,
        sample("actorflow_routine_failed_total", **price): 1,
        sample("actorflow_routine_retried_total", **price): 0,
        sample("actorflow_routine_mailbox_depth", **price): 0,
        sample("actorflow_routine_handling_seconds_count", **split): 5,
        sample("actorflow_routine_handling_seconds_count", **price): 4,
        sample("actorflow_dead_letters_total", reason="skipped"): 1,
    }
    assert {key: samples.get(key) for key in expected} == expected
    metrics = served.runtime.metrics()["routines"][served.worker_id]
    for labels, routine_id in ((split, "split"), (price, "price")):
        histogram = metrics[routine_id]["handling_seconds"]
        buckets = [
            samples[sample("actorflow_routine_handling_seconds_bucket", le=le, **labels)]
            for le in histogram["buckets"]
        ]
        running = 0
        for le, count in zip(histogram["buckets"], buckets, strict=True):
            running += histogram["buckets"][le]
            assert count == running, le  # cumulative, as Prometheus wants
        assert buckets[-1] == histogram["count"]
        total = samples[sample("actorflow_routine_handling_seconds_sum", **labels)]
        assert total == pytest.approx(histogram["sum"])
    kinds = {
        "actorflow_jobs_active": "gauge",
        "actorflow_jobs_finished": "counter",
        "actorflow_routine_mailbox_depth": "gauge",
        "actorflow_routine_handling_seconds": "histogram",
        "actorflow_dead_letters": "counter",
    }
    assert {name: types.get(name, types.get(name + "_total")) for name in kinds} == kinds


def test_prometheus_text_written_here_matches_prometheus_client(served: Served) -> None:
    own, content_type = prometheus_text(served.runtime, use_client=False)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    own_samples, own_types = small_parser(own)
    assert own_samples[sample("actorflow_dead_letters_total", reason="skipped")] == 1
    assert own_types["actorflow_routine_handling_seconds"] == "histogram"
    assert parse_prometheus(own)[0] == own_samples
    pytest.importorskip("prometheus_client", reason="prometheus_client is not installed")
    written, _ = prometheus_text(served.runtime, use_client=True)
    assert parse_prometheus(written)[0] == own_samples


def test_prometheus_label_values_are_escaped(runtime: Runtime) -> None:
    odd = 'a "quoted"\\ \nreason'
    runtime._book.dead_letter(None, None, None, None, odd)
    text, _ = prometheus_text(runtime, use_client=False)
    assert 'reason="a \\"quoted\\"\\\\ \\nreason"' in text
    assert small_parser(text)[0][sample("actorflow_dead_letters_total", reason=odd)] == 1
    assert parse_prometheus(text)[0][sample("actorflow_dead_letters_total", reason=odd)] == 1


# -- the inspect command against the real endpoint -------------------------------------------
def test_actorflow_inspect_reads_the_monitor(served: Served) -> None:
    result = CliRunner().invoke(main, ["inspect", served.url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["errors"] == {}
    assert data["workers"][0]["worker_id"] == served.worker_id
    assert data["jobs"]["total"] == 3
    assert data["metrics"]["jobs"]["failed"] == 1
    assert data["dead-letters"]["by_reason"] == {"skipped": 1}
    table = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["inspect", served.url])
    assert table.exit_code == 0, table.output
    assert "ValueError: empty order (after 3 tries)" in table.stdout
    row = next(line for line in table.stdout.splitlines() if "│ split" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:6] == [
        served.worker_id, "split", "2", "3", "2", "0",
    ]  # fmt: skip


# -- life cycle ------------------------------------------------------------------------------
def test_shutdown_stops_the_monitor(runtime: Runtime) -> None:
    monitor = runtime.serve_monitor()
    assert get_json(monitor.url + "/api/workers") == []
    runtime.shutdown()
    assert not monitor.running
    assert not [t for t in threading.enumerate() if t.name.startswith("actorflow-monitor")]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(monitor.url + "/api/workers", timeout=WAIT)
    monitor.stop()  # again: nothing to do
    with pytest.raises(RuntimeClosedError):
        runtime.serve_monitor()


def test_one_monitor_at_a_time(runtime: Runtime) -> None:
    first = runtime.serve_monitor()
    with pytest.raises(ConfigurationError, match="a monitor already serves at"):
        runtime.serve_monitor()
    first.stop()
    second = runtime.serve_monitor()
    assert second.running and get_json(second.url + "/api/metrics")["jobs"]["active"] == 0


def test_bad_addresses_are_refused(runtime: Runtime) -> None:
    with pytest.raises(ConfigurationError, match="port must be an int"):
        runtime.serve_monitor(port=70000)
    taken = runtime.serve_monitor()
    other = Runtime()
    try:
        with pytest.raises(ConfigurationError, match="cannot listen on 127.0.0.1"):
            other.serve_monitor(port=taken.port)
    finally:
        other.shutdown()


def test_requests_in_flight_end_before_stop_returns(runtime: Runtime) -> None:
    monitor = runtime.serve_monitor()
    answers: list[int] = []
    clients = [
        threading.Thread(target=lambda: answers.append(fetch(monitor.url + "/metrics").status))
        for _ in range(8)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(WAIT)
    monitor.stop()
    assert answers == [200] * 8
    assert not [t for t in threading.enumerate() if t.name.startswith("actorflow-monitor")]


def test_an_idle_client_neither_blocks_others_nor_stop(runtime: Runtime) -> None:
    monitor = runtime.serve_monitor()
    with socket.create_connection(("127.0.0.1", monitor.port), timeout=WAIT) as idle:
        assert get_json(monitor.url + "/api/workers") == []  # answered meanwhile
        # the idle connection has its handler thread by now (accepted before the request
        # above, on the one accepting thread); stop ends it instead of waiting for the client
        runtime.shutdown()
        assert idle.recv(1) == b""  # closed without an answer
    assert not [t for t in threading.enumerate() if t.name.startswith("actorflow-monitor")]


# -- the page --------------------------------------------------------------------------------
def test_page_is_self_contained(served: Served) -> None:
    answer = fetch(served.url + "/")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    page = answer.body.decode("utf-8")
    assert page.startswith("<!doctype html>") and "<title>actorflow monitor</title>" in page
    assert 'fetch(path, {cache: "no-store"})' in page and "setInterval(refresh," in page
    # no external resource: the only absolute URL is the SVG namespace, which is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)


def run_chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{name}"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )


@pytest.fixture
def chromium() -> Iterator[Path]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (./scripts/test installs the chromium package)")
    yield CHROMIUM


@pytest.mark.timeout(300)
def test_page_in_headless_chromium(served: Served, chromium: Path, tmp_path: Path) -> None:
    """The page draws the flow and fills in the live counts from the JSON API.

    With ``ACTORFLOW_MONITOR_SCREENSHOT=path.png`` the screenshot is kept there.
    """
    shot = tmp_path / "page.png"
    result = run_chromium(
        tmp_path, "shot", f"--screenshot={shot}", "--window-size=1200,900",
        "--virtual-time-budget=3000", served.url + "/",
    )  # fmt: skip
    assert shot.exists(), result.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1200, 900)
    assert len(png) > 20_000  # a blank or error page compresses to a few kB
    keep = os.environ.get("ACTORFLOW_MONITOR_SCREENSHOT")  # a path, to look at the page
    if keep:
        shutil.copyfile(shot, keep)

    result = run_chromium(
        tmp_path, "dom", "--dump-dom", "--virtual-time-budget=3000", served.url + "/"
    )
    dom = result.stdout
    assert "</html>" in dom, result.stderr[-2000:]

    def text_of(element_id: str) -> str:
        match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
        assert match is not None, element_id
        return match.group(1)

    counts = {name: text_of(f"stat-{name}") for name in
              ("active", "completed", "failed", "cancelled", "dead", "workers")}  # fmt: skip
    assert counts == {
        "active": "0", "completed": "2", "failed": "1", "cancelled": "0", "dead": "1",
        "workers": "1",
    }  # fmt: skip
    assert text_of("updated").startswith("updated ")
    assert 'class="dot live"' in dom
    # the flow graph: one box per routine, with its live counts
    for routine_id, handled, failed in (("split", 2, 3), ("price", 3, 1)):
        node = re.search(rf'<g class="node[^"]*" data-routine="{routine_id}">(.*?)</g>', dom)
        assert node is not None, routine_id
        assert f">handled {handled}<" in node.group(1) and f">failed {failed}<" in node.group(1)
    assert ">line → line<" in dom
    # tables filled from /api/workers, /api/jobs and /api/dead-letters
    assert served.worker_id in dom and served.jobs[2].job_id in dom
    assert "ValueError: empty order (after 3 tries)" in dom and ">skipped<" in dom
