"""The ``actorflow`` command: run a flow, draw it, put it under faults, inspect a service.

    actorflow run app.py:flow --post parse.line='"pen,3"' --jobs 100
    actorflow run flows/orders.yaml --post parse.line='"pen,3"' --json
    actorflow graph shop.flows:build_flow --format mermaid -o flow.mmd
    actorflow chaos app.py:flow --post parse.line='"pen,3"' --jobs 200 --drop 0.1 \\
        --crash store:40 --raise parse:0.2 --seed 7 --deterministic
    actorflow replay failed-job.json app.py:flow
    actorflow inspect http://localhost:8080
    actorflow serve app.py:flow --port 8000 --token-env ACTORFLOW_TOKEN
    actorflow bench --quick

A TARGET is ``path/to/app.py:name`` or ``package.module:name`` (``name`` is a ``Flow``, or a
function that takes no argument and returns one; without ``:name`` the module's only Flow is
used), or a ``.yaml``/``.yml``/``.json`` flow file (see :mod:`actorflow.flowfile`).

Exit codes: 0 when every job completed (``run``), the steady state held (``chaos``), the
replay ran as recorded (``replay``), every endpoint answered (``inspect``) or the server
stopped on a signal (``serve``); 1 otherwise; 2 for a usage error (bad TARGET, bad option,
unknown routine or slot), reported in one line without a traceback.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from actorflow import __version__
from actorflow._durations import check_seconds
from actorflow._yaml_source import kind_of
from actorflow.errors import ActorflowError, InvalidDurationError
from actorflow.experiments import error_kind, percentile, run_experiment
from actorflow.fault_files import FaultPlanFileError, load_fault_plan
from actorflow.faults import FaultPlan
from actorflow.flow import Flow
from actorflow.flowfile import FLOW_FILE_SUFFIXES, FlowFileError, load_flow_file
from actorflow.graph import GraphvizError, flow_to_dot, flow_to_mermaid, flow_to_svg
from actorflow.job import JobContext
from actorflow.registry import FlowRegistry
from actorflow.runtime import Runtime
from actorflow.testing import RecordingFormatError
from actorflow.testing import replay as replay_job

__all__ = ["InjectedFault", "PostSpec", "load_target", "main"]

INSPECT_ENDPOINTS = ("workers", "jobs", "metrics", "dead-letters")
_module_names = itertools.count(1)


class InjectedFault(Exception):
    """The exception ``actorflow chaos --raise`` makes a routine's logic raise."""

    def __init__(self, message: str = "fault injected by actorflow chaos") -> None:
        super().__init__(message)


# -- targets ---------------------------------------------------------------------------------
def _bad_target(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint="TARGET")


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame of ``exc``'s traceback, or ''."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import_file(path: Path) -> ModuleType:
    """Run ``path`` as a module, as ``python path`` would find its siblings (not as main)."""
    if not path.is_file():
        raise _bad_target(f"no such file: {path}")
    stem = path.stem
    name = stem if stem.isidentifier() and stem not in sys.modules else ""
    if not name:
        name = f"_actorflow_target_{next(_module_names)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _bad_target(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _bad_target(
            f"importing {path} raised {type(exc).__name__}: {exc}{_where(exc)}"
        ) from None
    return module


def _import_module(name: str) -> ModuleType:
    """Import ``name`` with the current directory searched first, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise _bad_target(
                f"no module named {exc.name!r} (TARGET is path/to/app.py:flow, "
                "package.module:flow or a .yaml/.yml/.json flow file; a module is looked up "
                "from the current directory and the installed packages)"
            ) from None
        raise _bad_target(f"importing {name} raised ModuleNotFoundError: {exc}") from None
    except Exception as exc:
        raise _bad_target(
            f"importing {name} raised {type(exc).__name__}: {exc}{_where(exc)}"
        ) from None


def _only_flow(module: ModuleType, where: str) -> Flow:
    found = {name: value for name, value in vars(module).items() if isinstance(value, Flow)}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise _bad_target(f"{where} defines no Flow; name the one to use as {where}:NAME")
    names = ", ".join(sorted(found))
    raise _bad_target(f"{where} defines several flows ({names}); pick one as {where}:NAME")


def load_target(target: str) -> Flow:
    """The Flow a TARGET names (see the module docs); ``click.BadParameter`` if it names none."""
    if Path(target).suffix.lower() in FLOW_FILE_SUFFIXES:
        if not Path(target).is_file():
            raise _bad_target(f"no such flow file: {target}")
        try:
            return load_flow_file(target)
        except FlowFileError as exc:
            raise _bad_target(str(exc)) from None
    location, sep, attribute = target.rpartition(":")
    if not sep:
        location, attribute = target, ""
    if Path(location).suffix.lower() in FLOW_FILE_SUFFIXES:
        raise _bad_target(f"a flow file takes no :NAME (write {location})")
    if not location:
        raise _bad_target(
            f"{target!r} is not path/to/app.py:flow, package.module:flow or a flow file"
        )
    is_file = location.endswith(".py") or "/" in location or os.sep in location
    module = _import_file(Path(location)) if is_file else _import_module(location)
    if not attribute:
        return _only_flow(module, location)
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise _bad_target(f"{location} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not isinstance(value, Flow) and callable(value):
        try:
            value = value()
        except Exception as exc:
            raise _bad_target(
                f"calling {target}() raised {type(exc).__name__}: {exc}{_where(exc)}"
            ) from None
    if not isinstance(value, Flow):
        raise _bad_target(
            f"{target} is {kind_of(value)}, not a Flow "
            "(or a function without arguments that returns one)"
        )
    return value


# -- --post, --metadata and fault options ----------------------------------------------------
@dataclass(frozen=True)
class PostSpec:
    """One ``--post routine.slot=JSON``."""

    routine: str
    slot: str
    data: Any

    @property
    def name(self) -> str:
        return f"{self.routine}.{self.slot}"


def _parse_post(text: str) -> PostSpec:
    target, sep, raw = text.partition("=")
    routine, dot, slot = target.strip().rpartition(".")
    if not sep or not dot or not routine or not slot:
        raise click.BadParameter(
            f"{text!r} is not ROUTINE.SLOT=JSON (for example parse.line='\"pen,3\"')"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{target}: the data {raw!r} is not JSON ({exc.msg}, column {exc.colno}); "
            f"a string needs its quotes: {target}='\"text\"'"
        ) from None
    return PostSpec(routine, slot, data)


def _posts_option(
    ctx: click.Context, param: click.Parameter, value: Sequence[str]
) -> list[PostSpec]:
    return [_parse_post(text) for text in value]


def _metadata_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        metadata = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(metadata, dict):
        raise click.BadParameter(f'must be a JSON object, like \'{{"k": "v"}}\', not {value}')
    return metadata


def _check_posts(flow: Flow, posts: Sequence[PostSpec]) -> None:
    routines = flow.routines
    for post in posts:
        if post.routine not in routines:
            raise click.UsageError(
                f"--post {post.name}: flow {flow.flow_id!r} has no routine {post.routine!r} "
                f"(routines: {', '.join(sorted(routines))})"
            )
        slots = routines[post.routine].slots
        if post.slot not in slots:
            raise click.UsageError(
                f"--post {post.name}: routine {post.routine!r} has no slot {post.slot!r} "
                f"(slots: {', '.join(slots) or 'none'})"
            )


def _fault_values(
    option: str, values: Iterable[str], flow: Flow, need_routine: bool, as_int: bool
) -> list[tuple[str | None, float]]:
    """``[ROUTINE:]NUMBER`` values of a fault option, the routine checked against the flow."""
    parsed: list[tuple[str | None, float]] = []
    form = "ROUTINE:N" if as_int else ("ROUTINE:P" if need_routine else "[ROUTINE:]NUMBER")
    for text in values:
        routine, sep, number = text.rpartition(":")
        if not sep:
            routine, number = "", text
        if need_routine and not routine:
            raise click.BadParameter(f"{text!r} is not {form}", param_hint=option)
        if routine and routine not in flow.routines:
            raise click.BadParameter(
                f"flow {flow.flow_id!r} has no routine {routine!r} "
                f"(routines: {', '.join(sorted(flow.routines))})",
                param_hint=option,
            )
        try:
            value = float(int(number)) if as_int else float(number)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not {form}", param_hint=option) from None
        parsed.append((routine or None, value))
    return parsed


def _build_plan(
    flow: Flow,
    seed: int,
    lost_message_timeout: float,
    drop: Sequence[str],
    delay: Sequence[str],
    duplicate: Sequence[str],
    crash: Sequence[str],
    raises: Sequence[str],
    base: FaultPlan | None = None,
) -> FaultPlan:
    """The plan of ``actorflow chaos``: ``base`` (a ``--faults`` file) if given, then one rule
    per fault option."""
    plan = base or FaultPlan(seed=seed, lost_message_timeout=lost_message_timeout)

    def where(routine: str | None) -> dict[str, Any]:
        return {} if routine is None else {"routine": routine}

    try:
        for routine, p in _fault_values("--drop", drop, flow, False, False):
            plan.drop(p=p, **where(routine))
        for routine, seconds in _fault_values("--delay", delay, flow, False, False):
            plan.delay(seconds, **where(routine))
        for routine, p in _fault_values("--duplicate", duplicate, flow, False, False):
            plan.duplicate(p=p, **where(routine))
        for routine, n in _fault_values("--crash", crash, flow, True, True):
            plan.crash(str(routine), on_message=int(n))
        for routine, p in _fault_values("--raise", raises, flow, True, False):
            plan.raise_in(str(routine), InjectedFault, p=p)
    except ActorflowError as exc:  # a probability outside [0, 1], a negative delay, ...
        raise click.UsageError(str(exc)) from None
    return plan


def _check_plan_routines(flow: Flow, plan: FaultPlan) -> None:
    """Every routine a plan's rules name is one of the flow's (a typo would inject nothing)."""
    for rule in plan.rules:
        named = set(rule.groups[0] | rule.groups[1]) if rule.groups else set()
        for key in ("routine", "source"):
            if isinstance(rule.match.get(key), str):
                named.add(rule.match[key])
        unknown = sorted(named - set(flow.routines))
        if unknown:
            raise click.BadParameter(
                f"rule {rule.name} names routine(s) {', '.join(map(repr, unknown))} that flow "
                f"{flow.flow_id!r} does not have (routines: {', '.join(sorted(flow.routines))})",
                param_hint="--faults",
            )


# -- output helpers --------------------------------------------------------------------------
def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _metrics(runtime: Runtime) -> dict[str, Any] | None:
    """``runtime.metrics()`` where this runtime has it, else None."""
    metrics = getattr(runtime, "metrics", None)
    if not callable(metrics):
        return None
    result = metrics()
    return result if isinstance(result, dict) else None


def _routine_counts(metrics: Mapping[str, Any] | None) -> dict[str, dict[str, int]] | None:
    """Handled and failed counts per routine id, summed over workers."""
    if metrics is None:
        return None
    counts: dict[str, dict[str, int]] = {}
    for routines in (metrics.get("routines") or {}).values():
        for routine_id, figures in routines.items():
            total = counts.setdefault(routine_id, {"handled": 0, "failed": 0})
            total["handled"] += int(figures.get("handled", 0))
            total["failed"] += int(figures.get("failed", 0))
    return dict(sorted(counts.items()))


def summarize_jobs(
    flow_id: str, jobs: Sequence[JobContext], metrics: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The JSON-ready summary ``actorflow run`` prints."""
    statuses = Counter(job.status.value for job in jobs)
    latencies = [
        (job.completed_at - job.created_at).total_seconds() * 1000
        for job in jobs
        if job.completed_at is not None
    ]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    errors = Counter(error_kind(job.error) for job in jobs if job.error)
    return {
        "flow": flow_id,
        "posted": len(jobs),
        "completed": statuses.get("completed", 0),
        "failed": statuses.get("failed", 0),
        "cancelled": statuses.get("cancelled", 0),
        "unfinished": sum(1 for job in jobs if not job.done),
        "latency_ms": {
            "p50": None if p50 is None else round(p50, 3),
            "p99": None if p99 is None else round(p99, 3),
        },
        "routines": _routine_counts(metrics),
        "errors": dict(errors.most_common(10)),
    }


def _print_summary(summary: Mapping[str, Any]) -> None:
    console = _stdout()
    table = Table(title=f"flow {summary['flow']}: jobs", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for key in ("posted", "completed", "failed", "cancelled"):
        table.add_row(key, str(summary[key]))
    if summary["unfinished"]:
        table.add_row("unfinished", str(summary["unfinished"]))
    table.add_row("latency p50 ms", _ms(summary["latency_ms"]["p50"]))
    table.add_row("latency p99 ms", _ms(summary["latency_ms"]["p99"]))
    console.print(table)
    routines = summary["routines"]
    if routines is None:
        click.echo("(per-routine counts need a runtime with metrics())")
    elif routines:
        per_routine = Table(title="routines", title_justify="left")
        for column in ("routine", "handled", "failed"):
            per_routine.add_column(column, justify="left" if column == "routine" else "right")
        for routine_id, figures in routines.items():
            per_routine.add_row(routine_id, str(figures["handled"]), str(figures["failed"]))
        console.print(per_routine)
    if summary["errors"]:
        click.echo("errors:")
        for error, count in summary["errors"].items():
            click.echo(f"  {count} x {error}")


# -- the commands ----------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="actorflow", message="%(prog)s %(version)s"
)
def main() -> None:
    """actorflow: run, draw and stress actor-model workflows.

    TARGET is path/to/app.py:NAME or package.module:NAME (a Flow, or a function without
    arguments that returns one), or a .yaml/.yml/.json flow file.
    """


post_option = click.option(
    "--post",
    "posts",
    multiple=True,
    required=True,
    metavar="ROUTINE.SLOT=JSON",
    callback=_posts_option,
    help="post JSON data to a routine's slot (repeatable), e.g. parse.line='\"pen,3\"'",
)
metadata_option = click.option(
    "--metadata",
    metavar="JSON",
    callback=_metadata_option,
    help="metadata of every job (a JSON object)",
)


class _Seconds(click.ParamType[float, Any]):
    """A duration option: a finite number of seconds > 0, at most ``threading.TIMEOUT_MAX``,
    written ``2``, ``2.5``, ``2s`` or ``500ms``."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, str):
            text, scale = value.strip(), 1.0
            if text.endswith("ms"):
                text, scale = text[:-2], 0.001
            elif text.endswith("s"):
                text = text[:-1]
            try:
                value = float(text) * scale
            except ValueError:
                self.fail(f"{value!r} is not a duration (seconds: 2, 2.5s, 500ms)", param, ctx)
        try:
            return check_seconds("", "S", value, allow_zero=False)
        except (InvalidDurationError, TypeError) as exc:
            self.fail(str(exc), param, ctx)


SECONDS = _Seconds()


@main.command()
@click.argument("target")
@post_option
@click.option(
    "--jobs", "-n", type=click.IntRange(min=1), default=1, show_default=True,
    help="how many jobs to post for each --post",
)  # fmt: skip
@metadata_option
@click.option(
    "--timeout", type=SECONDS, default=None, metavar="S",
    help="fail each job still unfinished after S seconds",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def run(
    ctx: click.Context,
    target: str,
    posts: list[PostSpec],
    jobs: int,
    metadata: dict[str, Any] | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Run TARGET's flow: post jobs, wait for them, print what happened.

    Exits with 0 when every job completed and 1 otherwise.
    """
    flow = load_target(target)
    _check_posts(flow, posts)
    FlowRegistry.get_instance().register(flow)
    progress_console = Console(stderr=True)
    total = jobs * len(posts)
    posted: list[JobContext] = []
    progress = Progress(
        TextColumn("jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress_console,
        disable=as_json or not progress_console.is_terminal,
        transient=True,
    )
    try:
        with Runtime() as runtime, progress:
            task = progress.add_task("jobs", total=total)
            for post in posts:
                for _ in range(jobs):
                    _, job = runtime.post(
                        flow.flow_id, post.routine, post.slot, copy.deepcopy(post.data),
                        copy.deepcopy(metadata), timeout=timeout,
                    )  # fmt: skip
                    posted.append(job)
            for job in posted:
                job.wait()
                progress.advance(task)
            metrics = _metrics(runtime)
    except ActorflowError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    except KeyboardInterrupt:
        click.echo("interrupted: the runtime was shut down without waiting", err=True)
        ctx.exit(130)
    summary = summarize_jobs(flow.flow_id, posted, metrics)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)
    ctx.exit(0 if summary["completed"] == summary["posted"] else 1)


@main.command()
@click.argument("target")
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot", "svg"]), default="mermaid",
    show_default=True, help="mermaid and dot are text; svg runs Graphviz's dot",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="write to FILE instead of standard output",
)  # fmt: skip
def graph(target: str, fmt: str, output: Path | None) -> None:
    """Draw TARGET's flow: routines with their slots and events, connections as edges."""
    flow = load_target(target)
    try:
        text = {"mermaid": flow_to_mermaid, "dot": flow_to_dot, "svg": flow_to_svg}[fmt](flow)
    except GraphvizError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("target")
@post_option
@click.option(
    "--jobs", "-n", type=click.IntRange(min=1), default=100, show_default=True,
    help="how many jobs to post for each --post",
)  # fmt: skip
@metadata_option
@click.option(
    "--drop", multiple=True, metavar="[ROUTINE:]P", help="lose messages with probability P"
)
@click.option(
    "--delay", multiple=True, metavar="[ROUTINE:]S", help="deliver messages S seconds late"
)
@click.option(
    "--duplicate", multiple=True, metavar="[ROUTINE:]P",
    help="deliver messages twice with probability P",
)  # fmt: skip
@click.option(
    "--crash", multiple=True, metavar="ROUTINE:N", help="crash ROUTINE's actor on its N-th message"
)
@click.option(
    "--raise", "raises", multiple=True, metavar="ROUTINE:P",
    help="make ROUTINE's logic raise InjectedFault with probability P",
)  # fmt: skip
@click.option(
    "--faults", "faults_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE", help="a fault plan in YAML (see docs/testing.md); the options above add "
    "their rules after the file's",
)  # fmt: skip
@click.option(
    "--seed", type=int, default=0, show_default=True,
    help="seed of the fault plan (given, it replaces the seed of a --faults file)",
)  # fmt: skip
@click.option(
    "--deterministic", is_flag=True,
    help="one seeded scheduler and virtual time: the same seed gives the same report",
)  # fmt: skip
@click.option(
    "--timeout", type=SECONDS, default=5.0, show_default=True,
    metavar="S", help="job timeout; a job that lost a message fails after S seconds",
)  # fmt: skip
@click.option(
    "--backend", type=click.Choice(["threads", "ray"]), default="threads", show_default=True,
    help="ray: run on a local multi-node Ray cluster (see --nodes, --kill-node-at)",
)  # fmt: skip
@click.option(
    "--nodes", type=click.IntRange(min=2), default=3, show_default=True,
    help="(--backend ray) Ray nodes of the local cluster, the driver's among them",
)  # fmt: skip
@click.option(
    "--kill-node-at", type=SECONDS, default=None, metavar="S",
    help="(--backend ray) remove the node running most routine actors S seconds into the run",
)  # fmt: skip
@click.option(
    "--kill-state-owner-at", type=SECONDS, default=None, metavar="S",
    help="(--backend ray) kill the process owning the worker's state S seconds into the run",
)  # fmt: skip
@click.option(
    "--kill-routine-at", "kill_routine", multiple=True, metavar="ROUTINE:S",
    help="(--backend ray) kill the process of one of ROUTINE's actors S seconds into the run "
    "(repeatable)",
)  # fmt: skip
@click.option(
    "--state-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    metavar="PATH", help="(--backend ray) keep the worker's state in this SQLite file, so it "
    "survives its owner's process",
)  # fmt: skip
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None, metavar="JOBS/S",
    help="(--backend ray) post at most this many jobs a second",
)  # fmt: skip
@click.option(
    "--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    metavar="DIR", help="(--backend ray) write report.json and summary.txt into DIR",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def chaos(
    ctx: click.Context,
    target: str,
    posts: list[PostSpec],
    jobs: int,
    metadata: dict[str, Any] | None,
    drop: tuple[str, ...],
    delay: tuple[str, ...],
    duplicate: tuple[str, ...],
    crash: tuple[str, ...],
    raises: tuple[str, ...],
    faults_file: Path | None,
    seed: int,
    deterministic: bool,
    timeout: float,
    backend: str,
    nodes: int,
    kill_node_at: float | None,
    kill_state_owner_at: float | None,
    kill_routine: tuple[str, ...],
    state_file: Path | None,
    rate: float | None,
    report_dir: Path | None,
    as_json: bool,
) -> None:
    """Run TARGET's flow without faults, then under faults, and report both.

    The steady state checked before and after is "every job ended" (completed, failed or
    cancelled). Exits with 0 when it held both times, 1 otherwise.

    With --backend ray the experiment runs on a local cluster of --nodes Ray nodes, and
    --kill-node-at removes a node while the faulty run goes on (--kill-state-owner-at and
    --kill-routine-at kill single processes); the report also says which
    jobs each fault hit, and shows job outcomes over time with a mark where each fault hit.
    """
    if backend != "ray":
        for name, given in (
            ("--kill-node-at", kill_node_at is not None), ("--rate", rate is not None),
            ("--report", report_dir is not None),
            ("--kill-state-owner-at", kill_state_owner_at is not None),
            ("--kill-routine-at", bool(kill_routine)), ("--state-file", state_file is not None),
            ("--nodes", ctx.get_parameter_source("nodes") is not ParameterSource.DEFAULT),
        ):  # fmt: skip
            if given:
                raise click.UsageError(f"{name} needs --backend ray")
    elif deterministic:
        raise click.UsageError("--deterministic needs the thread backend (no --backend ray)")
    flow = load_target(target)
    _check_posts(flow, posts)
    base = None
    if faults_file is not None:
        try:
            base = load_fault_plan(faults_file)
        except FaultPlanFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--faults") from None
        _check_plan_routines(flow, base)
        if ctx.get_parameter_source("seed") is not ParameterSource.DEFAULT:
            base.seed = seed
        seed = base.seed
    plan = _build_plan(flow, seed, timeout, drop, delay, duplicate, crash, raises, base)
    workload = [
        (post.routine, post.slot, post.data, metadata or {}) for post in posts for _ in range(jobs)
    ]
    if backend == "ray":
        kills = ProcessKills(
            kill_node_at, kill_state_owner_at, _routine_kills(flow, kill_routine), state_file
        )
        _chaos_on_ray(ctx, flow, workload, plan, nodes, kills, rate, timeout, report_dir, as_json)
        return
    try:
        report = run_experiment(
            flow,
            workload,
            plan,
            steady_state=lambda r: r["unfinished"] == 0,
            job_timeout=timeout,
            deterministic=deterministic,
            seed=seed if deterministic else None,
        )
    except ActorflowError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    if as_json:
        click.echo(report.to_json())
    else:
        _print_report(report)
    held = report["steady_state_before"] and report["steady_state_after"]
    ctx.exit(0 if held else 1)


@dataclass(frozen=True)
class ProcessKills:
    """What ``chaos --backend ray`` kills, and when (seconds into the run under faults)."""

    node_at: float | None
    state_owner_at: float | None
    routines_at: dict[str, float]
    state_file: Path | None


def _routine_kills(flow: Flow, given: Sequence[str]) -> dict[str, float]:
    """``--kill-routine-at ROUTINE:S`` options, checked against the flow."""
    kills: dict[str, float] = {}
    for text in given:
        routine, sep, seconds = text.rpartition(":")
        if not sep or not routine:
            raise click.BadParameter(
                f"{text!r} is not ROUTINE:SECONDS", param_hint="--kill-routine-at"
            )
        if routine not in flow.routines:
            known = ", ".join(sorted(flow.routines))
            raise click.BadParameter(
                f"flow {flow.flow_id!r} has no routine {routine!r} (routines: {known})",
                param_hint="--kill-routine-at",
            )
        kills[routine] = SECONDS.convert(seconds, None, None)
    return kills


def _chaos_on_ray(
    ctx: click.Context,
    flow: Flow,
    workload: list[tuple[Any, ...]],
    plan: FaultPlan,
    nodes: int,
    kills: ProcessKills,
    rate: float | None,
    timeout: float,
    report_dir: Path | None,
    as_json: bool,
) -> None:
    """``actorflow chaos --backend ray``: the experiment on a local multi-node cluster."""
    from actorflow.cluster_experiments import run_cluster_experiment  # noqa: PLC0415

    with Progress(console=Console(stderr=True), transient=True) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, ended: int, posted: int) -> None:
            if phase not in tasks:
                label = "without faults" if phase == "baseline" else "under faults"
                tasks[phase] = progress.add_task(f"jobs ended, {label}", total=posted)
            progress.update(tasks[phase], completed=ended)

        try:  # Ray's driver prints a lost raylet's last log lines on stdout: stdout is ours
            with contextlib.redirect_stdout(sys.stderr):
                report = run_cluster_experiment(
                    flow, workload, plan, nodes=nodes, kill_node_at=kills.node_at,
                    kill_state_owner_at=kills.state_owner_at, kill_routine_at=kills.routines_at,
                    state_store=_sqlite_store(kills.state_file),
                    post_rate=rate, job_timeout=timeout, on_progress=on_progress,
                )  # fmt: skip
        except ActorflowError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    if report_dir is not None:
        try:
            report_dir.mkdir(parents=True, exist_ok=True)
            (report_dir / "report.json").write_text(report.to_json(), encoding="utf-8")
            (report_dir / "summary.txt").write_text(report.summary(), encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(
                f"cannot write the report into {report_dir}: {exc}"
            ) from None
        click.echo(f"wrote {report_dir / 'report.json'} and {report_dir / 'summary.txt'}", err=True)
    click.echo(report.to_json() if as_json else report.summary().rstrip("\n"))
    ctx.exit(0 if report["steady_state_before"] and report["steady_state_after"] else 1)


def _sqlite_store(path: Path | None) -> Any:
    """A function making the SQLite store at ``path`` in the state owner's process, or None."""
    if path is None:
        return None
    from actorflow.store import create_store  # noqa: PLC0415

    return functools.partial(create_store, "sqlite", path=str(path.resolve()))


def _print_report(report: Mapping[str, Any]) -> None:
    console = _stdout()
    baseline = report["baseline"]
    table = Table(title=f"flow {report['flow']}: chaos experiment", title_justify="left")
    table.add_column("jobs")
    table.add_column("without faults", justify="right")
    table.add_column("under faults", justify="right")
    for key in ("posted", "completed", "failed", "cancelled", "unfinished"):
        table.add_row(key, str(baseline[key]), str(report[key]))
    for key in ("p50", "p99", "mean"):
        table.add_row(
            f"latency {key} ms",
            _ms(baseline["latency_ms"][key]),
            _ms(report["latency_ms"][key]),
        )
    console.print(table)
    for title, counts in (
        ("faults injected", report["faults_injected"]),
        ("dead letters", report["dead_letters"]),
    ):
        if counts:
            click.echo(f"{title}:")
            for name, count in counts.items():
                click.echo(f"  {name}: {count}")
    if report["errors"]:
        click.echo("errors of failed jobs:")
        for error, count in report["errors"].items():
            click.echo(f"  {count} x {error}")
    click.echo(f"steady state (every job ended) without faults: {report['steady_state_before']}")
    click.echo(f"steady state (every job ended) under faults: {report['steady_state_after']}")


@main.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="the deterministic scheduler's seed"
)  # fmt: skip
@click.option(
    "--traceback", "show_traceback", is_flag=True,
    help="print the traceback of what the replayed logic raised",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def replay(
    ctx: click.Context, recording: Path, target: str, seed: int, show_traceback: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Run a recorded job (RECORDING, a JSON file from Runtime.recording) again with TARGET's
    flow on the deterministic runtime, answering its WorkerState calls with the recorded
    values, and say where the new run first diverges from the recording.

    Exits with 0 when the replay ran as recorded (same steps, same outcome), 1 otherwise.
    """
    flow = load_target(target)
    try:
        report = replay_job(recording, flow, seed=seed)
    except RecordingFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="RECORDING") from None
    except ActorflowError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=repr))
    else:
        click.echo(report.summary())
    if show_traceback and report.exception is not None:
        click.echo("".join(traceback.format_exception(report.exception)).rstrip("\n"))
    ctx.exit(0 if report.reproduced else 1)


def benchmark_script() -> Path:
    """Where ``benchmarks/run_all.py`` is in a source checkout."""
    return Path(__file__).resolve().parent.parent / "benchmarks" / "run_all.py"


@main.command()
@click.option("--quick", is_flag=True, help="a short run (fewer jobs and rounds)")
@click.pass_context
def bench(ctx: click.Context, quick: bool) -> None:
    """Run the benchmarks (benchmarks/run_all.py of a source checkout)."""
    script = benchmark_script()
    if not script.is_file():
        raise click.ClickException(
            f"{script} does not exist: the benchmarks ship with actorflow's source repository, "
            "not with the package; in a checkout run python benchmarks/run_all.py [--quick]"
        )
    command = [sys.executable, str(script), *(["--quick"] if quick else [])]
    result = subprocess.run(command, check=False, cwd=script.parent.parent)
    ctx.exit(result.returncode)


# -- inspect ---------------------------------------------------------------------------------
def _base_url(url: str) -> str:
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="URL")
    path = parts.path.rstrip("/")
    if path.endswith("/api"):
        path = path[: -len("/api")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class _Unreachable(Exception):
    pass


def _fetch(url: str, timeout: float) -> Any:
    """GET ``url`` as JSON; ``_Unreachable`` when no server answers, ValueError otherwise."""
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"actorflow/{__version__}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise ValueError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _Unreachable(str(reason)) from None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the answer is not JSON ({exc})") from None


# C0 and C1 controls, DEL, and the bidirectional formatting characters: a remote service could
# use them to move the cursor, clear the screen, set the window title, add hyperlinks or make
# text read backwards.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_CONTROLS.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _printable(value: Any) -> str:
    """``value`` as text with every control character shown as an escape (``\\x1b``)."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(_escape_control, text)


def _text(value: Any) -> Text:
    """Text from outside, for Rich: printed as it is (never read as markup), escaped."""
    return Text(_printable(value))


def _cell(value: Any) -> Text:
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, sort_keys=True))  # ensure_ascii: controls become \u escapes
    return Text("-") if value is None else _text(value)


def _flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One level of nested mappings turned into ``key.sub`` columns."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if (
            isinstance(value, dict)
            and value
            and not any(isinstance(v, dict | list) for v in value.values())
        ):
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[str(key)] = value
    return flat


def _records(payload: Any) -> list[dict[str, Any]] | None:
    """Rows of a table: a list of objects, or an object of objects (keyed by id)."""
    if isinstance(payload, list) and payload and all(isinstance(x, dict) for x in payload):
        return [_flatten(x) for x in payload]
    if isinstance(payload, dict) and payload and all(isinstance(x, dict) for x in payload.values()):
        return [{"id": key, **_flatten(value)} for key, value in payload.items()]
    return None


def _print_records(console: Console, title: str, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    table = Table(title=_text(title), title_justify="left")
    for column in columns:
        table.add_column(_text(column), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def _print_payload(console: Console, title: str, payload: Any, depth: int = 0) -> None:
    """A table for whatever JSON an endpoint answered (objects, lists, nested once or twice)."""
    rows = _records(payload)
    if rows is not None and (depth > 0 or not isinstance(payload, dict) or _is_flat(rows)):
        _print_records(console, title, rows)
        return
    if isinstance(payload, dict) and payload:
        payload = _flatten(payload)
        scalars = {k: v for k, v in payload.items() if not isinstance(v, dict | list) or depth >= 2}
        if scalars:
            table = Table(title=_text(title), title_justify="left", show_header=False)
            table.add_column("")
            table.add_column("", overflow="fold")
            for key, value in scalars.items():
                table.add_row(_text(key), _cell(value))
            console.print(table)
        for key, value in payload.items():
            if key not in scalars:
                _print_payload(console, f"{title} / {key}", value, depth + 1)
        return
    if isinstance(payload, list) and payload:
        table = Table(title=_text(title), title_justify="left", show_header=False)
        table.add_column("", overflow="fold")
        for item in payload:
            table.add_row(_cell(item))
        console.print(table)
        return
    shown = _cell(payload).plain if payload not in ({}, []) else "none"
    click.echo(f"{_printable(title)}: {shown}")


def _is_flat(rows: list[dict[str, Any]]) -> bool:
    return all(not isinstance(v, dict | list) for row in rows for v in row.values())


def _histogram_ms(histogram: Mapping[str, Any], quantile: float) -> str:
    """The upper bound (ms) of the bucket holding ``quantile`` of the observations."""
    count = int(histogram.get("count") or 0)
    buckets = histogram.get("buckets") or {}
    if not count or not isinstance(buckets, dict):
        return "-"
    counts = [int(v) for v in buckets.values()]
    cumulative = all(a <= b for a, b in itertools.pairwise(counts)) and counts[-1] == count
    running = 0
    for bound, n in zip(buckets, counts, strict=True):
        running = n if cumulative else running + n
        if running >= quantile * count:
            return "> max" if bound == "+Inf" else f"<= {float(bound) * 1000:g}"
    return "-"


def _print_metrics(console: Console, metrics: Any) -> None:
    """``/api/metrics`` in the shape of ``Runtime.metrics()``; anything else generically."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("routines"), dict):
        _print_payload(console, "metrics", metrics)
        return
    for key, value in metrics.items():
        if key != "routines":
            _print_payload(console, f"metrics / {key}", value, 1)
    table = Table(title="metrics / routines", title_justify="left")
    columns = ("worker", "routine", "handled", "failed", "retried", "mailbox", "mean ms", "p99 ms")
    for column in columns:
        table.add_column(column, justify="left" if column in ("worker", "routine") else "right")
    for worker_id, routines in metrics["routines"].items():
        if not isinstance(routines, dict):
            continue
        for routine_id, figures in routines.items():
            histogram = figures.get("handling_seconds") or {}
            count = int(histogram.get("count") or 0)
            mean = "-" if not count else f"{float(histogram.get('sum', 0)) / count * 1000:.3f}"
            table.add_row(
                _text(worker_id),
                _text(routine_id),
                _cell(figures.get("handled")),
                _cell(figures.get("failed")),
                _cell(figures.get("retried")),
                _cell(figures.get("mailbox_depth")),
                Text(mean),
                Text(_histogram_ms(histogram, 0.99)),
            )
    console.print(table)


@main.command("inspect")
@click.argument("url")
@click.option(
    "--timeout", type=SECONDS, default=5.0, show_default=True,
    metavar="S", help="seconds to wait for each answer",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print what the endpoints answered as JSON")
@click.pass_context
def inspect_command(ctx: click.Context, url: str, timeout: float, as_json: bool) -> None:
    """Show a running service's workers, jobs, metrics and dead letters.

    URL is the service's monitoring address; its JSON is read from URL/api/workers,
    URL/api/jobs, URL/api/metrics and URL/api/dead-letters. What it answers is printed as
    plain text, with control characters shown as escapes (\\x1b).
    """
    base = _base_url(url)
    answers: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for endpoint in INSPECT_ENDPOINTS:
        address = f"{base}/api/{endpoint}"
        try:
            answers[endpoint] = _fetch(address, timeout)
        except _Unreachable as exc:
            raise click.ClickException(
                f"cannot reach {_printable(address)}: {_printable(exc)} (is the service running, "
                "with its monitoring endpoint at this address?)"
            ) from None
        except ValueError as exc:  # its text holds what the service answered: escaped
            problems[endpoint] = _printable(f"{address}: {exc}")
    if as_json:
        click.echo(json.dumps({**answers, "errors": problems}, indent=2, sort_keys=True))
    else:
        console = _stdout()
        for endpoint, payload in answers.items():
            if endpoint == "metrics":
                _print_metrics(console, payload)
            else:
                _print_payload(console, endpoint, payload)
        for problem in problems.values():
            click.echo(f"error: {problem}", err=True)
    ctx.exit(1 if problems else 0)


# -- serve -----------------------------------------------------------------------------------
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@main.command()
@click.argument("target")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
    help="port to listen on (0 picks a free one)",
)  # fmt: skip
@click.option(
    "--token-env", metavar="VAR", default=None,
    help="environment variable holding the bearer token that turns on job submission and "
    "cancellation (without it the app is read-only)",
)  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, target: str, host: str, port: int, token_env: str | None) -> None:
    """Run TARGET's flow in a runtime and serve its web app (actorflow.web) under uvicorn.

    The monitor page at /, the JSON API under /api/, /metrics for Prometheus. Prints the
    address it serves at, then serves until interrupted (Ctrl-C or SIGTERM), and shuts the
    runtime down. Needs the web extra: pip install 'actorflow[web]'.
    """
    token = None
    if token_env is not None:
        token = os.environ.get(token_env, "")
        if not token.strip():
            raise click.BadParameter(
                f"the environment variable {token_env} is not set or empty",
                param_hint="'--token-env'",
            )
    try:
        from actorflow.web import WebServer, create_app  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    flow = load_target(target)
    FlowRegistry.get_instance().register(flow)
    if host not in _LOOPBACK:
        click.echo(f"warning: serving on {host}, beyond this machine", err=True)
    try:
        with Runtime() as runtime:
            runtime.exec(flow.flow_id)
            app = create_app(runtime, token)
            server = WebServer(
                app, port, host, thread_name="actorflow-serve", on_close=app.state.actorflow_close
            )
            with server:
                click.echo(f"serving flow {flow.flow_id!r} at {server.url}", err=False)
                sys.stdout.flush()
                _wait_for_a_signal()
    except ActorflowError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    ctx.exit(0)


def _wait_for_a_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    main()
