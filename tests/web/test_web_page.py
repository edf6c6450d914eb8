"""The monitor page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright):
live counts over server-sent events, a job submitted through the API appears, its timeline
opens when clicked, and screenshots are checked against what the API says."""

from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_kit import AUTH, Served

CHROMIUM = Path("/usr/bin/chromium")
OK_GREEN = (0x2F, 0x85, 0x5A)  # svg.timeline rect.ok (monitor.css --ok)
RAISED_RED = (0xC5, 0x30, 0x30)  # svg.timeline rect.raised (monitor.css --bad)


def png_pixels(png: bytes) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Width, height and a count of each RGB colour of an 8-bit RGB(A) PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, data = 8, b""
    width = height = channels = 0
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        chunk = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += chunk
        position += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels
    previous = bytearray(stride)
    colours: Counter[tuple[int, int, int]] = Counter()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        for i in range(0, stride, channels):
            colours[(line[i], line[i + 1], line[i + 2])] += 1
        previous = line
    return width, height, colours


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (./scripts/test installs the chromium package)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (the dev extra)"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


@pytest.mark.timeout(180)
def test_the_monitor_page_shows_a_submitted_job_and_its_timeline(
    served: Served, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    expect = pytest.importorskip("playwright.sync_api").expect
    page.goto(served.url + "/")
    expect(page.locator("#stat-completed")).to_have_text("2")
    api = served.client.get("/api/metrics").json()["jobs"]
    for name in ("active", "completed", "failed", "cancelled"):
        assert _text(page, f"#stat-{name}") == str(api[name])
    assert _text(page, "#stat-dead") == "1" and _text(page, "#stat-workers") == "1"
    # the flow graph, with live counts per routine
    split = page.locator('.node[data-routine="split"]')
    counts = str(split.text_content())
    assert "handled 2" in counts and "failed 3" in counts
    # failures by routine: retried tries told apart from the job that failed
    failures = page.locator("#failures tbody tr").all_inner_texts()
    assert [row.split("\t") for row in failures] == [
        ["orders", "price", "1", "0", "0"],
        ["orders", "split", "3", "2", "1"],
    ]

    # a job submitted through the API appears (pushed by the event stream)
    body = {"routine": "split", "slot": "order", "data": ["pen", "ink", "cap"]}
    answer = served.client.post("/api/flows/orders/jobs", json=body, headers=AUTH)
    assert answer.status_code == 202
    job_id = answer.json()["job_id"]
    row = page.locator(f'tr.job[data-job="{job_id}"]')
    row.wait_for(timeout=10_000)
    expect(page.locator("#stat-completed")).to_have_text("3")
    assert "completed" in row.inner_text()

    # clicking it opens its timeline, as the API tells it
    row.click()
    page.locator("#timeline-box").wait_for(state="visible")
    expect(page.locator("#timeline-job")).to_have_text(job_id)
    job = served.client.get(f"/api/jobs/{job_id}").json()
    bars = page.locator("svg.timeline rect")
    assert bars.count() == len(job["timeline"]) == 4
    assert [bars.nth(i).get_attribute("data-routine") for i in range(4)] == [
        step["routine_id"] for step in job["timeline"]
    ]
    assert [bars.nth(i).get_attribute("class") for i in range(4)] == ["ok"] * 4
    assert _text(page, '[data-fact="status"] b') == job["status"] == "completed"
    assert _text(page, '[data-fact="steps"] b') == "4"
    steps = [r.split("\t") for r in page.locator("#timeline tbody tr").all_inner_texts()]
    assert [s[1] for s in steps] == ["split", "price", "price", "price"]
    assert row.get_attribute("class") == "job chosen"

    # screenshots: the whole page, and the timeline, whose bars are all green (all ok)
    shot = page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    keep = os.environ.get("ACTORFLOW_MONITOR_SCREENSHOT")  # a path, to look at the page
    if keep:
        Path(keep).write_bytes(shot)
    width, height, colours = png_pixels(shot)
    assert width == 1280 and height >= 1000
    timeline = page.locator("svg.timeline").screenshot()
    _, _, drawn = png_pixels(timeline)
    assert drawn[OK_GREEN] > 4 * 10 and drawn[RAISED_RED] == 0

    # the failed job: three tries of split, each raised: three red bars, no green
    failed = served.jobs[2].job_id
    page.locator(f'tr.job[data-job="{failed}"]').click()
    expect(page.locator("#timeline-job")).to_have_text(failed)
    expect(page.locator("svg.timeline rect.raised")).to_have_count(3)
    api_failed = served.client.get(f"/api/jobs/{failed}").json()
    assert [s["outcome"] for s in api_failed["timeline"]] == ["raised"] * 3
    _, _, drawn = png_pixels(page.locator("svg.timeline").screenshot())
    assert drawn[RAISED_RED] > 3 * 10 and drawn[OK_GREEN] == 0
    assert _text(page, '[data-fact="error"] b') == api_failed["error"]
    page.locator("#timeline-close").click()
    page.locator("#timeline-box").wait_for(state="hidden")
    assert errors == []
    assert colours  # the page drew something
    with httpx.Client(base_url=served.url) as client:  # the API still agrees at the end
        assert client.get("/api/metrics").json()["jobs"]["completed"] == 3


@pytest.mark.timeout(120)
def test_short_steps_of_a_job_that_waited_stay_visible_bars(served: Served, browser: Any) -> None:
    """A job that waited long before its first step (a busy worker) spans milliseconds while
    each step lasts microseconds: every bar is still drawn wide enough to see and to click."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(served.url + "/")
    page.locator("#stat-completed").wait_for()
    created = "2026-01-01T00:00:00.000000+00:00"
    steps = [
        {
            "routine_id": routine,
            "started_at": f"2026-01-01T00:00:00.0{start}+00:00",
            "duration_ms": 0.004,
            "outcome": "ok",
        }
        for routine, start in (
            ("split", "20000"),
            ("price", "20010"),
            ("price", "20020"),
            ("price", "20030"),
        )
    ]
    job = {"job_id": "waited", "created_at": created, "timeline": steps}
    page.evaluate(
        """job => { const box = document.createElement('div'); box.id = 'probe';
                   document.body.prepend(box); box.append(drawTimeline(job)); }""",
        job,
    )
    drawing = page.locator("#probe svg.timeline")
    widths = [float(drawing.locator("rect").nth(i).get_attribute("width")) for i in range(4)]
    assert min(widths) >= 6
    _, _, drawn = png_pixels(drawing.screenshot())
    # the split bar alone, on its own lane, is at least 4 x 12 pixels of pure colour
    assert drawn[OK_GREEN] > 4 * 10 and drawn[RAISED_RED] == 0
