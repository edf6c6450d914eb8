"""``actorflow inspect`` shows what a remote service answers as text: never as Rich markup,
never as terminal control sequences.

A monitoring endpoint on loopback answers with job ids, worker ids, keys, errors and an HTTP
reason phrase made of hostile strings: Rich markup (a link, styles), an OSC 8 hyperlink, a
clear-screen, a window-title change, a C1 control sequence introducer, a carriage return and a
right-to-left override.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from actorflow.cli import main

MARKUP = "[link=https://evil.example/]click[/link]"
STYLED = "[bold red]ALERT[/bold red]"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\here\x1b]8;;\x1b\\"
CLEAR = "\x1b[2J\x1b[H"
TITLE = "\x1b]0;pwned\x07"
C1_CSI = "\x9b31mred"
CR = "fake\rreal"
RTL = "abc\u202edcba"

JOB_ID = f"job-{MARKUP}-{OSC8}-{CLEAR}-{TITLE}-{C1_CSI}"
WORKER_ID = f"w-{STYLED}-{CR}-{RTL}"
ERROR = f"ValueError: {STYLED} {CLEAR}"
KEY = f"key{TITLE}{STYLED}"
REASON = f"Bad {STYLED} {C1_CSI} {TITLE}"

ANSWERS = {
    "/api/workers": [
        {"worker_id": WORKER_ID, "flow_id": MARKUP, "status": "running", KEY: OSC8},
    ],
    "/api/jobs": {
        "jobs": [
            {"job_id": JOB_ID, "status": "failed", "error": ERROR},
            {"job_id": MARKUP, "status": STYLED, "error": None},
        ],
        "total": 2,
        KEY: CLEAR,
    },
    "/api/metrics": {
        "jobs": {"active": 0, "completed": 1, "failed": 1, "cancelled": 0},
        "workers": {WORKER_ID: {"flow_id": TITLE, "status": STYLED}},
        "routines": {
            WORKER_ID: {
                JOB_ID: {"handled": 1, "failed": STYLED, "retried": CLEAR, "mailbox_depth": 0}
            }
        },
        KEY: [],
        "dead_letters": MARKUP,
    },
}

# every C0 control but the newlines that end the output's own lines, DEL, every C1 control,
# and the bidirectional formatting characters
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def hostile() -> Iterator[str]:
    """A monitoring endpoint on loopback that answers hostile strings; dead-letters answers
    500 with a hostile reason phrase."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = ANSWERS.get(self.path)
            body = json.dumps(payload).encode() if payload is not None else b"{}"
            if payload is None:
                self.send_response_only(500, REASON)
            else:
                self.send_response_only(200)
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


def shown(text: str) -> str:
    """How inspect shows ``text``: each control character as an escape."""
    named = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
    return "".join(
        named.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if c in named or FORBIDDEN.match(c)
        else c
        for c in text
    )


def test_the_hostile_server_does_send_what_it_says() -> None:
    assert FORBIDDEN.findall(OSC8 + CLEAR + TITLE + C1_CSI + CR + RTL)
    assert shown(CLEAR) == "\\x1b[2J\\x1b[H" and shown(C1_CSI) == "\\x9b31mred"


def test_inspect_shows_remote_strings_literally_and_no_control_characters(hostile: str) -> None:
    result = CliRunner(env={"COLUMNS": "1000"}).invoke(main, ["inspect", hostile])
    assert result.exit_code == 1  # dead-letters answered 500
    for stream in (result.stdout, result.stderr):
        assert not FORBIDDEN.findall(stream), FORBIDDEN.findall(stream)
    out = result.stdout
    for text in (MARKUP, STYLED, JOB_ID, WORKER_ID, ERROR, KEY, OSC8, CLEAR, TITLE, CR, RTL):
        assert shown(text) in out, shown(text)
    assert f"metrics / {shown(KEY)}: none" in out  # a title made of a remote key
    assert shown(REASON) in result.stderr


def test_inspect_json_escapes_control_characters(hostile: str) -> None:
    result = CliRunner().invoke(main, ["inspect", hostile, "--json"])
    assert not FORBIDDEN.findall(result.stdout)
    data = json.loads(result.stdout)
    assert data["jobs"]["jobs"][0]["job_id"] == JOB_ID
    assert shown(REASON) in data["errors"]["dead-letters"]
