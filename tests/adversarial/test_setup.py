"""Setting up and running the suite: the project's .venv, the apt step, and the CI gate.

``scripts/demo`` and ``scripts/test`` install only into ``.venv`` and say what to install when
they cannot; ``scripts/test`` stops, under ``ACTORFLOW_REQUIRE_REAL_PARTS=1``, when a Debian
package cannot be installed; and under that variable the test session fails every test that
would be skipped for a missing server, program or package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFTEST = ROOT / "tests" / "conftest.py"
GATE = "ACTORFLOW_REQUIRE_REAL_PARTS"
# What the scripts' bash needs before they reach Python (found on this machine's PATH).
TOOLS = ("bash", "cat", "dirname", "id", "mktemp", "rm", "tail", "mkdir", "printf")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the gate and the apt opt-out, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (GATE, "ACTORFLOW_NO_APT", "PYTHON")}
    env.update(extra)
    return env


def bin_dir(tmp_path: Path, *tools: str, **scripts: str) -> Path:
    """A directory for PATH holding only ``tools`` (linked from this PATH) and fake ``scripts``."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not on PATH"
        (directory / tool).symlink_to(found)
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        path.chmod(0o755)
    return directory


def copy_of(tmp_path: Path, *files: str) -> Path:
    """A project directory holding copies of ``files`` (paths relative to the repository)."""
    project = tmp_path / "project"
    for name in files:
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return project


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run ``command``; returns its exit code and output as ``"exit=N\\n..."``."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return f"exit={result.returncode}\n{result.stdout}{result.stderr}"


# -- the gate in the test session ----------------------------------------------------------
@pytest.mark.timeout(180)
def test_a_missing_redis_server_fails_the_run_under_the_gate(tmp_path: Path) -> None:
    """The suite's own Redis tests, with PATH pointing away from redis-server."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
        "tests/store/test_store_redis.py::test_key_layout_and_index_stay_in_step",
    ]  # fmt: skip
    gated = run(command, ROOT, clean_env(PATH=str(empty), **{GATE: "1"}))
    assert gated.startswith("exit=1\n"), gated
    assert f"{GATE}=1, and this would be skipped: redis-server is not installed" in gated
    assert "1 error" in gated and "skipped" not in gated.splitlines()[-1]
    plain = run(command, ROOT, clean_env(PATH=str(empty)))
    assert plain.startswith("exit=0\n"), plain
    assert "1 skipped" in plain


MISSING_PARTS = """
import pytest

otel = pytest.importorskip("no_such_module_for_the_gate", reason="opentelemetry-sdk not installed")
"""

SKIPS = """
import pytest


@pytest.mark.skipif(True, reason="Graphviz's dot is not on PATH")
def test_graphviz():
    pass


def test_chromium():
    pytest.skip("/usr/bin/chromium is missing (./scripts/test installs the chromium package)")


def test_ray(local_ray):
    pass


def test_redis(redis_url):
    pass


@pytest.mark.parametrize("reason", [
    "the redis store has no max_entries",
    "docs/x.md line 3: marked 'python no-run'",
])
def test_ordinary(reason):
    pytest.skip(reason)


@pytest.mark.xfail(reason="expected to fail")
def test_expected_failure():
    raise AssertionError


def test_passes():
    pass
"""


def test_the_gate_fails_every_missing_part_and_keeps_ordinary_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_missing_module=MISSING_PARTS, test_skips=SKIPS)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no redis-server
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setenv(GATE, "1")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, failed=1, errors=4, skipped=2, xfailed=1)
    text = result.stdout.str()
    for reason in (
        "opentelemetry-sdk not installed",
        "Graphviz's dot is not on PATH",
        "/usr/bin/chromium is missing",
        "Ray is not installed",
        "redis-server is not installed",
    ):
        assert f"{GATE}=1, and this would be skipped: {reason}" in text, reason
    assert "SKIPPED [1] test_skips.py:" in text and "the redis store has no max_entries" in text

    monkeypatch.delenv(GATE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=7, xfailed=1)


def test_ci_run_sets_the_gate(tmp_path: Path) -> None:
    project = copy_of(tmp_path, ".ci/run")
    fake = project / "scripts" / "test"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "gate=${GATE}"\n', encoding="utf-8")
    fake.chmod(0o755)
    output = run(["bash", ".ci/run"], project, clean_env())
    assert output == "exit=0\ngate=1\n"


# -- the apt step of scripts/test ------------------------------------------------------------
FAILING_APT = 'echo "apt-get $*" >>"$APT_LOG"\n[ "$1" = update ] || { echo "E: no such package" >&2; exit 100; }\n'


def test_a_failed_apt_install_stops_scripts_test_under_the_gate(tmp_path: Path) -> None:
    """Graphviz's failed install used to be ignored (``|| true``) and its tests skipped."""
    project = copy_of(tmp_path, "scripts/test", "scripts/_venv.sh")
    fakes = {"apt-get": FAILING_APT, "redis-server": "exit 0\n"}  # graphviz is not on PATH
    path = bin_dir(tmp_path, *TOOLS, **fakes)
    apt_log = tmp_path / "apt.log"
    env = clean_env(PATH=str(path), APT_LOG=str(apt_log), **{GATE: "1"})
    output = run(["bash", "scripts/test"], project, env)
    assert output.startswith("exit=1\n"), output
    if os.geteuid() == 0:
        assert "apt-get install" in apt_log.read_text() and "graphviz" in apt_log.read_text()
        assert "E: no such package" in output and "apt-get failed" in output
    assert "missing: graphviz" in output
    assert f"{GATE}=1 forbids skipping the tests that need them" in output
    assert not (project / ".venv").exists()  # stopped before setting up Python


def test_no_apt_opt_out_never_runs_apt_get(tmp_path: Path) -> None:
    project = copy_of(tmp_path, "scripts/test", "scripts/_venv.sh")
    path = bin_dir(tmp_path, *TOOLS, **{"apt-get": FAILING_APT})
    apt_log = tmp_path / "apt.log"
    env = clean_env(PATH=str(path), APT_LOG=str(apt_log), ACTORFLOW_NO_APT="1", **{GATE: "1"})
    output = run(["bash", "scripts/test"], project, env)
    assert output.startswith("exit=1\n"), output
    assert "missing: redis-server graphviz" in output and "ACTORFLOW_NO_APT=1" in output
    assert not apt_log.exists()

    # without the gate the run goes on to set up Python (here: a PYTHON that does not exist)
    env = clean_env(
        PATH=str(path), APT_LOG=str(apt_log), ACTORFLOW_NO_APT="1", PYTHON="no-such-python3"
    )
    output = run(["bash", "scripts/test"], project, env)
    assert output.startswith("exit=1\n"), output
    assert "the tests that need them will be skipped" in output
    assert "no-such-python3 was not found: actorflow needs Python 3.11 or newer" in output
    assert "apt-get install python3 python3-venv" in output
    assert not apt_log.exists()


# -- .venv -----------------------------------------------------------------------------------
TINY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "actorflow-setup-probe"
version = "0.1.0"

[tool.setuptools]
py-modules = ["setup_probe"]
"""

PROBE_MAIN = """\
import sys

import setup_probe

print("prefix", sys.prefix)
print("probe", setup_probe.__file__)
"""


@pytest.mark.timeout(600)
def test_scripts_demo_installs_into_the_project_venv_only_and_once(tmp_path: Path) -> None:
    """A tiny project with the real scripts: .venv is made, used, and reinstalled on change."""
    project = copy_of(tmp_path, "scripts/demo", "scripts/_venv.sh")
    (project / "pyproject.toml").write_text(TINY_PYPROJECT, encoding="utf-8")
    (project / "setup.cfg").write_text("", encoding="utf-8")
    (project / "setup_probe.py").write_text("", encoding="utf-8")
    (project / "examples").mkdir()
    (project / "examples" / "quickstart.py").write_text(PROBE_MAIN, encoding="utf-8")
    env = clean_env(PYTHON=sys.executable)

    first = run(["bash", "scripts/demo"], project, env, timeout=500)
    assert first.startswith("exit=0\n"), first
    venv = (project / ".venv").resolve()
    assert "creating the virtual environment .venv" in first
    assert "installing actorflow into .venv" in first
    assert f"prefix {venv}" in first
    assert f"probe {project.resolve() / 'setup_probe.py'}" in first
    base = subprocess.run(
        [sys.executable, "-c", "import setup_probe"], cwd=tmp_path, capture_output=True, check=False
    )
    assert base.returncode != 0, "the interpreter that made .venv got the package"

    second = run(["bash", "scripts/demo"], project, env)
    assert second.startswith("exit=0\n") and "installing" not in second, second

    (project / "setup.cfg").write_text("# changed\n", encoding="utf-8")
    third = run(["bash", "scripts/demo"], project, env, timeout=500)
    assert third.startswith("exit=0\n") and "installing actorflow into .venv" in third, third
    assert "creating" not in third


def test_missing_ensurepip_names_the_python3_venv_package(tmp_path: Path) -> None:
    """Debian's python3 without python3-venv has venv but no ensurepip."""
    project = copy_of(tmp_path, "scripts/demo", "scripts/_venv.sh")
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ensurepip.py").write_text("raise ImportError('no ensurepip')\n", encoding="utf-8")
    env = clean_env(PYTHON=sys.executable, PYTHONPATH=str(shadow))
    output = run(["bash", "scripts/demo"], project, env)
    assert output.startswith("exit=1\n"), output
    assert "has no ensurepip module, which creating .venv needs" in output
    assert "install the python3-venv package: apt-get install python3-venv" in output
    assert not (project / ".venv").exists()


OLD_PYTHON = """\
case "$2" in
  *"sys.exit(sys.version_info < (3, 11))"*) exit 1 ;;
  *version_info*) echo 3.10 ;;
  *) exit 2 ;;
esac
"""


def test_an_old_python_is_refused_with_its_version(tmp_path: Path) -> None:
    project = copy_of(tmp_path, "scripts/demo", "scripts/_venv.sh")
    path = bin_dir(tmp_path, *TOOLS, python3=OLD_PYTHON)
    output = run(["bash", "scripts/demo"], project, clean_env(PATH=str(path)))
    assert output.startswith("exit=1\n"), output
    assert "actorflow needs Python 3.11 or newer; python3 is Python 3.10." in output
    assert not (project / ".venv").exists()


def test_a_directory_named_venv_that_is_not_one_is_left_alone(tmp_path: Path) -> None:
    project = copy_of(tmp_path, "scripts/demo", "scripts/_venv.sh")
    (project / ".venv").mkdir()
    (project / ".venv" / "notes.txt").write_text("mine\n", encoding="utf-8")
    output = run(["bash", "scripts/demo"], project, clean_env(PYTHON=sys.executable))
    assert output.startswith("exit=1\n"), output
    assert ".venv exists but is not a virtual environment" in output
    assert (project / ".venv" / "notes.txt").read_text() == "mine\n"
