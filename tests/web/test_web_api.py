"""The JSON API of ``actorflow.web`` over real HTTP (uvicorn on loopback, httpx)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import httpx
import pytest
from web_kit import AUTH, TOKEN, WAIT, Served

from actorflow import ConfigurationError, Flow, FlowRegistry, Routine, Runtime
from actorflow.graph import flow_to_mermaid
from actorflow.web import WebServer, create_app
from actorflow.web._headers import CONTENT_SECURITY_POLICY


def _json(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.json()


# -- reading ---------------------------------------------------------------------------------
def test_serve_monitor_listens_on_loopback_from_a_named_daemon_thread(served: Served) -> None:
    server = served.server
    assert server.host == "127.0.0.1" and server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.running and repr(server) == f"WebServer({server.url}, running)"
    threads = [t for t in threading.enumerate() if t.name == "actorflow-monitor"]
    assert len(threads) == 1 and threads[0].daemon


def test_workers(served: Served) -> None:
    assert _json(served.client.get("/api/workers")) == [
        {
            "worker_id": served.worker_id,
            "flow_id": "orders",
            "status": "running",
            "restarts": 0,
            "jobs": {"active": 0, "completed": 2, "failed": 1, "cancelled": 0},
        }
    ]


def test_jobs_newest_first_with_filters_and_paging(served: Served) -> None:
    ids = [job.job_id for job in served.jobs]
    answer = _json(served.client.get("/api/jobs"))
    assert [job["job_id"] for job in answer["jobs"]] == ids[::-1]
    assert (answer["total"], answer["limit"], answer["offset"], answer["next_offset"]) == (
        3, 100, 0, None,
    )  # fmt: skip
    failed = answer["jobs"][0]
    assert failed["status"] == "failed" and failed["failed_in"] == "split"
    assert failed["error"] == "ValueError: empty order (after 3 tries)"
    created = datetime.fromisoformat(failed["created_at"])
    assert created.utcoffset() is not None and failed["duration_ms"] >= 0
    page = _json(served.client.get("/api/jobs", params={"limit": 2, "offset": 0}))
    assert [job["job_id"] for job in page["jobs"]] == [ids[2], ids[1]]
    assert page["next_offset"] == 2
    page = _json(served.client.get("/api/jobs", params={"limit": 2, "offset": 2}))
    assert [job["job_id"] for job in page["jobs"]] == [ids[0]] and page["next_offset"] is None
    completed = _json(served.client.get("/api/jobs", params={"status": "completed"}))
    assert [job["job_id"] for job in completed["jobs"]] == [ids[1], ids[0]]
    assert completed["total"] == 2
    by_flow = _json(served.client.get("/api/jobs", params={"flow": "orders"}))
    assert by_flow["total"] == 3
    assert _json(served.client.get("/api/jobs", params={"flow": "other"}))["total"] == 0
    by_worker = _json(served.client.get("/api/jobs", params={"worker": served.worker_id}))
    assert by_worker["total"] == 3
    assert _json(served.client.get("/api/jobs", params={"worker": "w-none"}))["total"] == 0


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"status": "lost"}, "unknown status 'lost'"),
        ({"limit": "x"}, "limit must be an int >= 0 and <= 1000, got 'x'"),
        ({"limit": "1001"}, "limit must be an int >= 0 and <= 1000, got '1001'"),
        ({"offset": "-1"}, "offset must be an int >= 0, got '-1'"),
    ],
)
def test_jobs_with_a_bad_query_answer_400(
    served: Served, query: dict[str, str], error: str
) -> None:
    assert _json(served.client.get("/api/jobs", params=query), 400)["error"].startswith(error)


def test_one_job_with_data_trace_and_timeline(served: Served) -> None:
    job = served.jobs[2]  # failed after three tries of split
    answer = _json(served.client.get(f"/api/jobs/{job.job_id}"))
    assert answer["job_id"] == job.job_id and answer["status"] == "failed"
    assert answer["data"] == {} and answer["metadata"] == {}
    assert [entry["action"] for entry in answer["trace"]] == ["retry", "retry", "failed"]
    assert [(s["routine_id"], s["outcome"]) for s in answer["timeline"]] == [
        ("split", "raised")
    ] * 3
    assert answer["timeline"] == job.timeline and answer["timeline_dropped"] == 0
    good = _json(served.client.get(f"/api/jobs/{served.jobs[1].job_id}"))
    assert [s["routine_id"] for s in good["timeline"]] == ["split", "price", "price"]
    assert [s["outcome"] for s in good["timeline"]].count("raised") == 1
    assert good["errors"][0]["handled_as"] == "skip"
    missing = _json(served.client.get("/api/jobs/no-such-job"), 404)
    assert missing == {"error": "no job 'no-such-job' (unknown, or no longer retained)"}


def test_metrics_dead_letters_failures_and_flows(served: Served) -> None:
    metrics = _json(served.client.get("/api/metrics"))
    assert metrics["jobs"] == {"active": 0, "completed": 2, "failed": 1, "cancelled": 0}
    dead = _json(served.client.get("/api/dead-letters"))
    assert dead["total"] == 1 and dead["by_reason"] == {"skipped": 1}
    assert dead["recent"][0]["routine_id"] == "price"
    failures = _json(served.client.get("/api/failures"))
    assert failures == [
        {"flow_id": "orders", "routine_id": "price", "raised": 1, "retried": 0, "jobs_failed": 0},
        {"flow_id": "orders", "routine_id": "split", "raised": 3, "retried": 2, "jobs_failed": 1},
    ]
    flows = _json(served.client.get("/api/flows"))
    flow = FlowRegistry.get_instance().get("orders")
    assert flows == [
        {
            "flow_id": "orders",
            "workers": [served.worker_id],
            "routines": [
                {"routine_id": "price", "slots": ["line"], "events": []},
                {"routine_id": "split", "slots": ["order"], "events": ["line"]},
            ],
            "connections": [
                {"source": "split", "event": "line", "target": "price", "slot": "line"}
            ],
            "mermaid": flow_to_mermaid(flow),
        }
    ]


def test_unknown_paths_and_other_methods_answer_json_errors(served: Served) -> None:
    assert _json(served.client.get("/api/nothing"), 404) == {"error": "Not Found"}
    assert _json(served.client.delete("/api/jobs"), 405) == {"error": "Method Not Allowed"}
    assert _json(served.client.get("/api/flows/orders/jobs"), 405)["error"]


def test_every_answer_carries_the_browser_headers(served: Served) -> None:
    for path in ("/", "/static/monitor.js", "/static/monitor.css", "/api/jobs", "/metrics"):
        response = served.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY  # no inline script
    assert served.client.get("/").headers["content-type"] == "text/html; charset=utf-8"
    js = served.client.get("/static/monitor.js").headers["content-type"]
    assert js.startswith("text/javascript")
    page = served.client.get("/").text
    assert '<script src="static/monitor.js" defer></script>' in page
    assert "<script>" not in page and "<style>" not in page and " style=" not in page


# -- the OpenAPI description -----------------------------------------------------------------
def test_the_openapi_description_lists_every_route(served: Served) -> None:
    from starlette.routing import Route

    described = _json(served.client.get("/api/openapi.json"))
    assert described["openapi"].startswith("3.")
    app = create_app(served.runtime)
    routes = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    listed = {(path, method) for path, item in described["paths"].items() for method in item}
    assert listed == routes and len(routes) == 13
    for path, method in listed:
        assert described["paths"][path][method]["summary"], (path, method)
    submit = described["paths"]["/api/flows/{flow_id}/jobs"]["post"]
    schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["routine", "slot"] and submit["security"] == [{"bearer": []}]
    assert set(submit["responses"]) == {202, 400, 401, 403, 404, 413, 415, 422, 503} or set(
        submit["responses"]
    ) == {"202", "400", "401", "403", "404", "413", "415", "422", "503"}


# -- submitting, status, cancelling ----------------------------------------------------------
def test_submit_then_status(served: Served) -> None:
    response = served.client.post(
        "/api/flows/orders/jobs",
        json={"routine": "split", "slot": "order", "data": ["ink"], "metadata": {"who": "t"}},
        headers=AUTH,
    )
    answer = _json(response, 202)
    job_id = answer["job_id"]
    assert response.headers["location"] == f"/api/jobs/{job_id}"
    job = served.runtime.get_job(job_id)
    assert job is not None and job.wait(WAIT)
    status = _json(served.client.get(f"/api/jobs/{job_id}"))
    assert status["status"] == "completed" and status["metadata"] == {"who": "t"}
    assert [s["routine_id"] for s in status["timeline"]] == ["split", "price"]


def test_cancel(runtime: Runtime) -> None:
    started, release = threading.Event(), threading.Event()
    hold = Routine()
    hold.add_slot("item")

    def hold_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        started.set()
        assert release.wait(WAIT)

    hold.set_logic(hold_logic)
    flow = Flow("held")
    flow.add_routine(hold, "hold")
    FlowRegistry.get_instance().register(flow)
    server = runtime.serve_monitor(token=TOKEN)
    try:
        with httpx.Client(base_url=server.url, timeout=WAIT) as client:
            body = {"routine": "hold", "slot": "item", "data": 1}
            first = _json(client.post("/api/flows/held/jobs", json=body, headers=AUTH), 202)
            assert started.wait(WAIT)
            second = _json(client.post("/api/flows/held/jobs", json=body, headers=AUTH), 202)
            running = _json(client.get("/api/jobs", params={"status": "running"}))
            assert [job["job_id"] for job in running["jobs"]] == [first["job_id"]]
            assert running["jobs"][0]["completed_at"] is None
            cancelled = _json(client.post(f"/api/jobs/{second['job_id']}/cancel", headers=AUTH))
            assert cancelled["cancelled"] is True and cancelled["job"]["status"] == "cancelled"
            again = _json(client.post(f"/api/jobs/{second['job_id']}/cancel", headers=AUTH))
            assert again["cancelled"] is False
            missing = client.post("/api/jobs/nope/cancel", headers=AUTH)
            assert _json(missing, 404)["error"].startswith("no job 'nope'")
            release.set()
            job = runtime.get_job(first["job_id"])
            assert job is not None and job.wait(WAIT)
            assert _json(client.get(f"/api/jobs/{second['job_id']}"))["status"] == "cancelled"
    finally:
        release.set()
        server.close()
    assert runtime.wait_until_all_jobs_finished(WAIT)


# -- security --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["none", "wrong", "not-bearer", "longer"],
)
def test_state_changing_routes_refuse_a_missing_or_wrong_token(
    served: Served, headers: dict[str, str]
) -> None:
    body = {"routine": "split", "slot": "order", "data": ["pen"]}
    before = served.runtime.metrics()["jobs"]
    for response in (
        served.client.post("/api/flows/orders/jobs", json=body, headers=headers),
        served.client.post(f"/api/jobs/{served.jobs[0].job_id}/cancel", headers=headers),
    ):
        assert _json(response, 401)["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert served.runtime.metrics()["jobs"] == before  # nothing was posted


def test_with_no_token_the_state_changing_routes_are_off(runtime: Runtime) -> None:
    from web_kit import orders_flow

    orders_flow()
    server = runtime.serve_monitor()
    try:
        with httpx.Client(base_url=server.url, timeout=WAIT) as client:
            body = {"routine": "split", "slot": "order", "data": ["pen"]}
            for response in (
                client.post("/api/flows/orders/jobs", json=body, headers=AUTH),
                client.post("/api/jobs/any/cancel"),
            ):
                error = _json(response, 403)["error"]
                assert error.startswith("job submission and cancellation are off")
                assert "token" in error
            assert _json(client.get("/api/workers")) == []  # reading works
            assert client.get("/").status_code == 200
    finally:
        server.close()
    assert runtime.list_jobs() == []


# -- bad bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "content_type", "status", "error"),
    [
        (b"not json", "application/json", 400, "the body is not JSON"),
        (b"\xff\xfe", "application/json", 400, "the body is not JSON"),
        (b"[1, 2]", "application/json", 422, "the body must be a JSON object, got list"),
        (b'{"slot": "order"}', "application/json", 422, "'routine' must be a non-empty string"),
        (b'{"routine": 5, "slot": "order"}', None, 422, "'routine' must be a non-empty string"),
        (b'{"routine": "split", "slot": ""}', None, 422, "'slot' must be a non-empty string"),
        (
            b'{"routine": "split", "slot": "order", "metadata": [1]}', None, 422,
            "'metadata' must be an object, got list",
        ),
        (
            b'{"routine": "split", "slot": "order", "job": 1}', None, 422,
            "unknown field(s) ['job']",
        ),
        (
            b'{"routine": "nope", "slot": "order"}', None, 422,
            "flow 'orders' has no routine 'nope'",
        ),
        (
            b'{"routine": "split", "slot": "nope"}', None, 422,
            "routine 'split' of flow 'orders' has no slot 'nope'",
        ),
        (b"gASVBQAAAAAAAACMAXiULg==", "application/python-pickle", 415, "the body must be"),
    ],
)  # fmt: skip
def test_bad_bodies_answer_4xx_and_post_nothing(
    served: Served, content: bytes, content_type: str | None, status: int, error: str
) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = served.client.post("/api/flows/orders/jobs", content=content, headers=headers)
    assert _json(response, status)["error"].startswith(error)
    assert len(served.runtime.list_jobs()) == 3


def test_an_unknown_flow_answers_404(served: Served) -> None:
    body = {"routine": "split", "slot": "order"}
    response = served.client.post("/api/flows/ghost/jobs", json=body, headers=AUTH)
    assert "ghost" in _json(response, 404)["error"]


def test_a_body_over_the_limit_answers_413(runtime: Runtime) -> None:
    from web_kit import orders_flow

    orders_flow()
    app = create_app(runtime, TOKEN, max_body=100)
    with WebServer(app) as server, httpx.Client(base_url=server.url, timeout=WAIT) as client:
        big = {"routine": "split", "slot": "order", "data": ["x" * 200]}
        declared = client.post("/api/flows/orders/jobs", json=big, headers=AUTH)
        assert _json(declared, 413)["error"].startswith("the body has ")

        def chunks() -> Any:  # no Content-Length: sent chunked, counted while read
            yield b'{"routine": "split", "slot": "order", "data": ["'
            for _ in range(10):
                yield b"x" * 20
            yield b'"]}'

        streamed = client.post(
            "/api/flows/orders/jobs",
            content=chunks(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert _json(streamed, 413)["error"] == "the body is longer than 100 bytes"
        small = {"routine": "split", "slot": "order", "data": ["x"]}
        assert _json(client.post("/api/flows/orders/jobs", json=small, headers=AUTH), 202)
    assert len(runtime.list_jobs()) == 1


def test_a_full_mailbox_answers_503(runtime: Runtime) -> None:
    release = threading.Event()
    hold = Routine()
    hold.add_slot("item", max_queue_length=1)

    def hold_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        assert release.wait(WAIT)

    hold.set_logic(hold_logic)
    flow = Flow("narrow")
    flow.add_routine(hold, "hold")
    FlowRegistry.get_instance().register(flow)
    runtime.exec("narrow", overflow="raise")
    app = create_app(runtime, TOKEN)
    try:
        with WebServer(app) as server, httpx.Client(base_url=server.url, timeout=WAIT) as c:
            body = {"routine": "hold", "slot": "item", "data": 1}
            statuses = [c.post("/api/flows/narrow/jobs", json=body, headers=AUTH) for _ in range(4)]
            full = [r for r in statuses if r.status_code == 503]
            assert full and all(r.headers["retry-after"] == "1" for r in full)
            assert "messages waiting (max_queue_length=1" in _json(full[0], 503)["error"]
            assert {r.status_code for r in statuses} == {202, 503}
    finally:
        release.set()


# -- the server's life -----------------------------------------------------------------------
def test_shutdown_stops_the_server(runtime: Runtime) -> None:
    server = runtime.serve_monitor()
    assert httpx.get(server.url + "/api/workers", timeout=WAIT).json() == []
    runtime.shutdown()
    assert not server.running
    assert not [t for t in threading.enumerate() if t.name == "actorflow-monitor"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/api/workers", timeout=WAIT)
    server.close()  # again: nothing to do


def test_one_monitor_at_a_time_and_bad_addresses(runtime: Runtime) -> None:
    first = runtime.serve_monitor()
    with pytest.raises(ConfigurationError, match="a monitor already serves at"):
        runtime.serve_monitor()
    first.close()
    with pytest.raises(ConfigurationError, match="port must be an int from 0 to 65535"):
        runtime.serve_monitor(port=70000)
    second = runtime.serve_monitor()
    with Runtime() as other, pytest.raises(ConfigurationError, match="cannot listen on"):
        other.serve_monitor(port=second.port)
    with pytest.raises(ConfigurationError, match="token must be a non-empty str"):
        create_app(runtime, token="")
    second.close()


def test_an_open_event_stream_ends_when_the_server_closes(runtime: Runtime) -> None:
    server = runtime.serve_monitor()
    with httpx.Client(base_url=server.url, timeout=WAIT) as client:
        with client.stream("GET", "/api/events") as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry: ")
            assert next(line for line in lines if line).startswith("event: snapshot")
            closer = threading.Thread(target=server.close)
            closer.start()
            for _ in lines:  # ends: close() ended the stream
                pass
            closer.join(WAIT)
            assert not closer.is_alive()
    assert not server.running
