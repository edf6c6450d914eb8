"""Every example runs as a script and prints exactly its expected transcript.

The transcripts live in ``examples/expected/<name>.txt``. A new example needs one: run it
with ``ACTORFLOW_STRICT=1 python examples/<name>.py > examples/expected/<name>.txt`` and read
the result before committing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXPECTED = EXAMPLES / "expected"
TIMEOUT = 60

SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ACTORFLOW_STRICT"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONHASHSEED", None)
    return env


def test_there_are_examples() -> None:
    assert SCRIPTS, f"no examples found in {EXAMPLES}"


def test_every_transcript_has_an_example() -> None:
    orphans = sorted(
        path.name for path in EXPECTED.glob("*.txt") if not (EXAMPLES / f"{path.stem}.py").exists()
    )
    assert not orphans, f"transcripts without an example in examples/: {orphans}"


@pytest.mark.timeout(TIMEOUT + 10)
@pytest.mark.parametrize("script", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_example_prints_its_transcript(script: Path) -> None:
    expected_file = EXPECTED / f"{script.stem}.txt"
    assert expected_file.exists(), (
        f"examples/{script.name} has no expected output: add examples/expected/{script.stem}.txt"
    )
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            check=False,
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"examples/{script.name} did not finish within {TIMEOUT} s\n{exc.stdout}")
    assert result.returncode == 0, (
        f"examples/{script.name} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    assert result.stdout == expected_file.read_text(encoding="utf-8"), (
        f"examples/{script.name} printed something else than examples/expected/{expected_file.name}"
    )
