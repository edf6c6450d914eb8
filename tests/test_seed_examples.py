"""The seed documents' complete examples run with ``actorflow`` in place of ``routilux``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT.parent / "shared" / "tools" / "run-seed-examples"


@pytest.mark.timeout(240)
def test_seed_examples_run() -> None:
    if not TOOL.exists():
        pytest.skip(f"the seed documents' runner is not beside this checkout ({TOOL})")
    result = subprocess.run(
        [sys.executable, str(TOOL)], capture_output=True, text=True, timeout=230, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failed")
