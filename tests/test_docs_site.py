"""The documentation site builds with ``mkdocs build --strict`` (no broken link, no bad page)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    in_nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", config, re.MULTILINE))
    pages = {path.relative_to(ROOT / "docs").as_posix() for path in (ROOT / "docs").rglob("*.md")}
    assert in_nav == pages


def test_reference_directives_are_outside_code_blocks() -> None:
    """``::: module`` lines are mkdocstrings directives, never inside a fenced block."""
    fence = None
    directives = 0
    for number, line in enumerate((ROOT / "docs" / "reference.md").read_text().splitlines(), 1):
        match = re.match(r"^\s*(`{3,}|~{3,})", line)
        if match:
            fence = None if fence and match.group(1).startswith(fence) else fence or match.group(1)
        elif line.startswith(":::"):
            assert fence is None, f"docs/reference.md:{number}: ::: inside a code block"
            directives += 1
    assert directives >= 14


@pytest.mark.timeout(TIMEOUT + 30)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed (pip install -e ".[docs]" or ".[dev]")')
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not warnings, log[-4000:]
    for page in ("index", "observability/index", "reference/index", "cli/index"):
        assert (site / f"{page}.html").exists(), page
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("actorflow.Runtime", "serve_monitor", "actorflow.Routine", "JobContext",
                 "WorkerState", "StateAccessError", "ErrorStrategy", "FaultPlan",
                 "create_store", "DeterministicRuntime", "create_app", "WebServer"):  # fmt: skip
        assert name in reference, name
    assert ":::" not in reference  # every directive was expanded
    # fenced blocks with extra words in the info string (```python no-run) still render as code
    testing = (site / "testing" / "index.html").read_text(encoding="utf-8")
    assert "```" not in testing
