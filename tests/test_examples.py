"""Every example runs and prints exactly its expected transcript.

An example is a script, ``examples/<name>.py``, run as ``python examples/<name>.py``, or a
package, ``examples/<name>/`` with a ``__main__.py``, run from the repository root as
``python -m examples.<name>``. The transcripts live in ``examples/expected/<name>.txt``. A new
example needs one: run it with ``ACTORFLOW_STRICT=1`` and its output redirected to
``examples/expected/<name>.txt``, and read the result before committing it.
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
# examples that start a multi-node Ray cluster and lose a node take longer
TIMEOUTS = {"ray_node_loss": 420}

SCRIPTS = sorted(EXAMPLES.glob("*.py"))
PACKAGES = sorted(path.parent for path in EXAMPLES.glob("*/__main__.py"))


def _command(example: Path) -> list[str]:
    if example.is_dir():
        return [sys.executable, "-m", f"examples.{example.name}"]
    return [sys.executable, str(example)]


def _shown(example: Path) -> str:
    return f"examples/{example.name}" + ("/" if example.is_dir() else "")


ALL = SCRIPTS + PACKAGES


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ACTORFLOW_STRICT"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONHASHSEED", None)
    return env


def test_there_are_examples() -> None:
    assert SCRIPTS, f"no examples found in {EXAMPLES}"
    assert PACKAGES, f"no example packages (examples/<name>/__main__.py) found in {EXAMPLES}"


def test_every_example_directory_runs() -> None:
    """A directory of examples/ that the suite would not run is a mistake."""
    unrun = sorted(
        path.name
        for path in EXAMPLES.iterdir()
        if path.is_dir()
        and path.name not in {"expected", "__pycache__"}
        and not (path / "__main__.py").exists()
    )
    assert not unrun, f"example directories without a __main__.py: {unrun}"


def test_every_transcript_has_an_example() -> None:
    orphans = sorted(
        path.name
        for path in EXPECTED.glob("*.txt")
        if not (EXAMPLES / f"{path.stem}.py").exists()
        and not (EXAMPLES / path.stem / "__main__.py").exists()
    )
    assert not orphans, f"transcripts without an example in examples/: {orphans}"


@pytest.mark.timeout(max(TIMEOUTS.values(), default=TIMEOUT) + 10)
@pytest.mark.parametrize("example", ALL, ids=[path.stem for path in ALL])
def test_example_prints_its_transcript(example: Path) -> None:
    shown = _shown(example)
    timeout = TIMEOUTS.get(example.stem, TIMEOUT)
    expected_file = EXPECTED / f"{example.stem}.txt"
    assert expected_file.exists(), (
        f"{shown} has no expected output: add examples/expected/{example.stem}.txt"
    )
    try:
        result = subprocess.run(
            _command(example),
            check=False,
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{shown} did not finish within {timeout} s\n{exc.stdout}")
    assert result.returncode == 0, (
        f"{shown} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    assert result.stdout == expected_file.read_text(encoding="utf-8"), (
        f"{shown} printed something else than examples/expected/{expected_file.name}"
    )
