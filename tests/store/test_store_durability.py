"""An acknowledged sqlite write survives the death of the process that made it.

The writer prints each key only after ``put`` returned, and dies with ``os._exit``
while another write is in flight (no close, no atexit, no flush of anything).
A fresh process then reads every acknowledged key back.

With the default ``synchronous=FULL`` an acknowledged write has been fsynced, so
it would survive a power loss too; this test can only kill the process, which
``synchronous=NORMAL`` also survives -- it is run for both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import os, sys, threading
    from actorflow.store import SqliteStore

    store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
    enough = threading.Event()

    def write_forever():
        i = 0
        while True:
            key = f"k{i:06d}"
            store.put(key, {"i": i, "pad": "x" * 200})
            print(key, flush=True)  # acknowledged: put() has returned
            i += 1
            if i == 300:
                enough.set()

    threading.Thread(target=write_forever, daemon=True).start()
    enough.wait(40)
    os._exit(17)  # mid-stream: the writer thread is still putting
    """
)

READER = textwrap.dedent(
    """
    import json, sys
    from actorflow.store import SqliteStore

    with SqliteStore(sys.argv[1]) as store:
        print(json.dumps(store.range_get("k")))
    """
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_acknowledged_writes_survive_a_crash(tmp_path: Path, synchronous: str) -> None:
    path = str(tmp_path / "durable.sqlite3")
    writer = _python(WRITER, path, synchronous)
    assert writer.returncode == 17, writer.stderr
    acknowledged = writer.stdout.split()
    assert len(acknowledged) >= 300

    reader = _python(READER, path)
    assert reader.returncode == 0, reader.stderr
    stored = dict(json.loads(reader.stdout))
    missing = [key for key in acknowledged if key not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:5]}"
    for key in acknowledged:
        assert stored[key] == {"i": int(key[1:]), "pad": "x" * 200}
    # at most the one write in flight at the crash may be there unacknowledged
    assert len(stored) - len(acknowledged) in (0, 1)
