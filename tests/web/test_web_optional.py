"""The web extra stays optional: ``import actorflow`` needs none of it, and ``actorflow.web``
says how to install it when it is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip


def test_importing_actorflow_loads_no_web_framework() -> None:
    result = _python(
        "import sys, actorflow, actorflow.cli, actorflow.runtime\n"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'actorflow.web') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_starlette_actorflow_web_names_the_extra() -> None:
    result = _python(
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "try:\n"
        "    import actorflow.web\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'actorflow[web]'" in result.stdout
