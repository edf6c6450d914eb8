"""docs/stores.md is executable: each python block runs as its own script.

A block followed directly by an ``output`` block must print exactly that
(trailing whitespace aside).  Blocks run in a fresh temporary directory with
actorflow importable; ``ACTORFLOW_REDIS_URL`` points at the test redis-server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "stores.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def _examples() -> list[tuple[str, str | None, int]]:
    text = DOC.read_text(encoding="utf-8")
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    examples = []
    for i, (lang, code, start, end) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(blocks):
            next_lang, next_body, next_start, _ = blocks[i + 1]
            if next_lang == "output" and not text[end:next_start].strip():
                expected = next_body
        examples.append((code, expected, text.count("\n", 0, start) + 1))
    return examples


EXAMPLES = _examples()


def test_the_page_has_examples_with_outputs() -> None:
    assert len(EXAMPLES) >= 10
    assert all(expected is not None for _, expected, _ in EXAMPLES)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(
            code,
            expected,
            id=f"line{line}",
            marks=[pytest.mark.redis] if "ACTORFLOW_REDIS_URL" in code else [],
        )
        for code, expected, line in EXAMPLES
    ],
)
def test_example(
    code: str, expected: str | None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if "ACTORFLOW_REDIS_URL" in code:
        env["ACTORFLOW_REDIS_URL"] = request.getfixturevalue("redis_url")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if expected is not None:
        assert result.stdout.rstrip() == expected.rstrip()
