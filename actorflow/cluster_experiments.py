"""Fault-injection experiments on a local multi-node Ray cluster: a node goes away mid-run.

    report = run_cluster_experiment(
        flow,
        workload=[("order", "in", {"id": i}) for i in range(2000)],
        faults=FaultPlan(seed=1).drop(p=0.01, routine="charge"),   # optional
        nodes=3,
        kill_node_at=2.0,
    )
    print(report.summary())

As :func:`~actorflow.experiments.run_experiment` does on threads, the experiment runs the
workload twice on the same cluster, first without faults (the baseline), then with the fault
plan, and while the second run goes on it removes the node that runs most routine actors
``kill_node_at`` seconds after the first post. It can also kill processes: the owner of the
worker's state (``kill_state_owner_at``) and a routine's actor (``kill_routine_at``), each
with SIGKILL, as a crashing process ends; Ray starts another in its place. The steady-state
hypothesis is checked on both runs; by default it is "every job ended, and completed + failed +
cancelled == posted".

The report (a JSON-ready dict) holds the counts of both runs, every fault with the time it hit
(seconds since the first post) and the jobs it hit, the jobs in flight when the node went and
what became of them, how long the runtime took to end every one of them after the node went
(``recovery_seconds``), and job outcomes over time. :meth:`ClusterReport.summary` renders it
as text, and :func:`~actorflow.experiment_plots.plot_outcomes` draws the outcomes over time
with a mark where each fault hit.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from actorflow._durations import check_seconds
from actorflow.errors import ConfigurationError
from actorflow.experiments import error_kind, experiment_flow_id
from actorflow.faults import FaultPlan
from actorflow.flow import Flow
from actorflow.job import JobContext
from actorflow.runtime import Runtime
from actorflow.testing.ray_cluster import LocalRayCluster

__all__ = ["DEFAULT_HYPOTHESIS", "ClusterReport", "run_cluster_experiment"]

DEFAULT_HYPOTHESIS = "every job ended, and completed + failed + cancelled == posted"
JOB_IDS_KEPT = 50  # job ids listed per fault in a report (the count is always exact)
WORKER_ID = "experiment"  # the worker an experiment runs its workload on
PLOT_WIDTH = 40  # characters of the widest bar of the outcome plot

Workload = Iterable[tuple[str, str, Any] | tuple[str, str, Any, Mapping[str, Any]]]
Check = Callable[[Runtime, list[JobContext]], Mapping[str, Any]]


class ClusterReport(dict[str, Any]):
    """The outcome of a cluster experiment: a JSON-ready dict (see
    :func:`run_cluster_experiment`)."""

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self, indent=indent, sort_keys=True)

    def summary(self) -> str:
        """The report as text a person reads."""
        run, base = self["run"], self["baseline"]
        lines = [
            f"flow {self['flow']} on a local Ray cluster of {self['nodes']} nodes",
            "",
            f"{'jobs':<12}{'baseline':>10}{'faults':>10}",
        ]
        for key in ("posted", "completed", "failed", "cancelled", "unfinished"):
            lines.append(f"{key:<12}{base[key]:>10}{run[key]:>10}")
        lines.append("")
        lines.append("faults (seconds after the first post):")
        if not self["faults"]:
            lines.append("  none")
        for fault in self["faults"]:
            where = f" ({fault['where']})" if fault.get("where") else ""
            lines.append(
                f"  {fault['at']:>7.2f} s  {fault['fault']}{where}: {fault['jobs_hit']} job(s) hit"
            )
        loss = self.get("node_loss")
        if loss is not None:
            outcomes = ", ".join(f"{n} {status}" for status, n in loss["outcomes"].items())
            lines.append("")
            lines.append(
                f"node {loss['node'][:12]} removed at {loss['at']:.2f} s with routine actors "
                f"{', '.join(loss['routines']) or 'none'}; {loss['jobs_in_flight']} job(s) in "
                f"flight: {outcomes or 'none'}"
            )
            recovery = loss["recovery_seconds"]
            lines.append(
                "every job in flight ended "
                + ("(never)" if recovery is None else f"{recovery:.2f} s after the node went")
            )
        lines.append("")
        lines.extend(self.outcome_plot())
        if run["errors"]:
            lines.append("")
            lines.append("errors of failed jobs:")
            lines.extend(f"  {n} x {error}" for error, n in run["errors"].items())
        for name, value in self["checks"].items():
            lines.append(f"check {name}: {value}")
        lines.append("")
        lines.append(f"steady-state hypothesis: {self['hypothesis']}")
        lines.append(f"  held without faults: {self['steady_state_before']}")
        lines.append(f"  held under faults: {self['steady_state_after']}")
        return "\n".join(lines) + "\n"

    def outcome_plot(self, width: int = PLOT_WIDTH) -> list[str]:
        """Job outcomes over time under faults as lines of text: one line per time bin, a
        bar of its completed (``#``) and failed or cancelled (``x``) jobs, and where each
        fault hit."""
        bins = self["timeline"]
        step = self["bin_seconds"]
        if not bins:
            return ["job outcomes over time: no job ended"]
        most = max(b["completed"] + b["failed"] + b["cancelled"] for b in bins) or 1
        hits: dict[int, list[str]] = {}
        for fault in self["faults"]:
            hits.setdefault(int(fault["at"] // step), []).append(fault["fault"])
        lines = [f"job outcomes over time (a # or x is up to {-(-most // width)} job(s)):"]
        for index, b in enumerate(bins):
            bad = b["failed"] + b["cancelled"]
            good = -(-b["completed"] * width // most)
            worse = -(-bad * width // most)
            bar = ("#" * good + "x" * worse).ljust(width)[: width + 1]
            mark = f"  <- {', '.join(hits[index])}" if index in hits else ""
            counts = f"{b['completed']:>5} ok {bad:>5} failed"
            lines.append(f"  {b['t']:>7.1f} s |{bar}| {counts}{mark}")
        late = [name for index, names in hits.items() if index >= len(bins) for name in names]
        if late:
            lines.append(f"  after the last job ended: {', '.join(late)}")
        return lines


def run_cluster_experiment(
    flow: Flow | str,
    workload: Workload,
    faults: FaultPlan | None = None,
    steady_state: Callable[[Mapping[str, Any]], bool] | None = None,
    *,
    hypothesis: str | None = None,
    nodes: int = 3,
    kill_node_at: float | None = None,
    kill_state_owner_at: float | None = None,
    kill_routine_at: Mapping[str, float] | None = None,
    state_store: Callable[[], Any] | None = None,
    post_rate: float | None = None,
    job_timeout: float | None = None,
    wait: float = 180.0,
    check: Check | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    bin_seconds: float = 0.5,
) -> ClusterReport:
    """Run ``workload`` on ``flow`` on a local cluster of ``nodes`` Ray nodes, without and then
    with ``faults``, removing a node ``kill_node_at`` seconds into the second run.

    ``workload`` yields ``(routine_id, slot, data)`` or ``(routine_id, slot, data, metadata)``;
    ``post_rate`` spreads the posts (jobs per second; None posts as fast as the runtime takes
    them). ``steady_state`` is checked on each run's counts (default: every job ended and each
    is counted once), and ``hypothesis`` says in words what it checks. ``check(runtime,
    jobs)``, called after each run while its runtime is still up, returns extra findings (for
    instance, whether the worker's state is exact): they are reported under ``checks`` for the
    faulty run, and a finding that is ``False`` in either run makes the steady state fail.
    ``on_progress(phase, ended, posted)`` is called a few times a second. Durations are seconds
    (``InvalidDurationError`` if not).

    ``kill_state_owner_at`` kills the process owning the worker's state that many seconds into
    the second run, and ``kill_routine_at`` (routine id -> seconds) the process of one actor of
    each routine named. Ray starts each again; the runtime replays the jobs a dead routine actor
    may have held. A state owner's process keeps the state in its memory, so it survives the
    kill only with a ``state_store``: a function without arguments that makes the store in that
    process (as ``Runtime(backend="ray", state_store=...)`` takes it; each run starts from an
    empty state).
    """
    if faults is not None and not isinstance(faults, FaultPlan):
        raise TypeError(f"faults must be a FaultPlan or None, got {type(faults).__name__}")
    steps: list[tuple[float, str, str | None]] = []  # (at, what, routine id)
    if kill_node_at is not None:
        kill_node_at = check_seconds("run_cluster_experiment", "kill_node_at", kill_node_at)
    if kill_state_owner_at is not None:
        at = check_seconds("run_cluster_experiment", "kill_state_owner_at", kill_state_owner_at)
        steps.append((at, "state owner killed", None))
    for routine_id, seconds in (kill_routine_at or {}).items():
        name = f"kill_routine_at[{routine_id!r}]"
        steps.append(
            (
                check_seconds("run_cluster_experiment", name, seconds),
                "routine actor killed",
                routine_id,
            )
        )
    if state_store is not None and not callable(state_store):
        raise ConfigurationError(
            "state_store must be a function without arguments that makes the store (it runs "
            "in the state owner's process)"
        )
    job_timeout = check_seconds(
        "run_cluster_experiment", "job_timeout", job_timeout, allow_none=True, allow_zero=False
    )
    wait = check_seconds("run_cluster_experiment", "wait", wait)
    bin_seconds = check_seconds(
        "run_cluster_experiment", "bin_seconds", bin_seconds, allow_zero=False
    )
    if post_rate is not None and (isinstance(post_rate, bool) or not post_rate > 0):
        raise ConfigurationError(
            f"post_rate must be a number of jobs per second > 0, got {post_rate!r}"
        )
    flow_id = experiment_flow_id(flow)
    routines = flow.routines if isinstance(flow, Flow) else None
    for _, _, target in steps:
        if routines is not None and target is not None and target not in routines:
            raise ConfigurationError(f"kill_routine_at: flow {flow_id!r} has no {target!r}")
    items = [tuple(item) for item in workload]
    if steady_state is None:
        steady_state = _every_job_accounted_for
        hypothesis = hypothesis or DEFAULT_HYPOTHESIS
    settings = _Settings(
        flow_id, items, post_rate, job_timeout, wait, check, on_progress, state_store
    )
    with LocalRayCluster(nodes=nodes) as cluster:
        baseline = _run(cluster, settings, None, None, [], "baseline")
        run = _run(cluster, settings, faults, kill_node_at, steps, "faults")
    before = bool(steady_state(baseline.counts)) and all(
        v is not False for v in baseline.checks.values()
    )
    after = bool(steady_state(run.counts)) and all(v is not False for v in run.checks.values())
    report = ClusterReport(
        flow=flow_id,
        nodes=nodes,
        hypothesis=hypothesis or "the steady_state function given",
        steady_state_before=before,
        steady_state_after=after,
        baseline=baseline.counts,
        run=run.counts,
        checks=run.checks,
        baseline_checks=baseline.checks,
        faults=run.faults,
        timeline=_timeline(run.ends, bin_seconds),
        bin_seconds=bin_seconds,
        fault_plan=None
        if faults is None
        else {"seed": faults.seed, "rules": [rule.name for rule in faults.rules]},
    )
    if run.node_loss is not None:
        report["node_loss"] = run.node_loss
    return report


def _every_job_accounted_for(counts: Mapping[str, Any]) -> bool:
    ended = counts["completed"] + counts["failed"] + counts["cancelled"]
    return bool(counts["unfinished"] == 0 and ended == counts["posted"])


class _Settings:
    def __init__(
        self,
        flow_id: str,
        items: list[tuple[Any, ...]],
        post_rate: float | None,
        job_timeout: float | None,
        wait: float,
        check: Check | None,
        on_progress: Callable[[str, int, int], None] | None,
        state_store: Callable[[], Any] | None = None,
    ) -> None:
        self.flow_id = flow_id
        self.items = items
        self.post_rate = post_rate
        self.job_timeout = job_timeout
        self.wait = wait
        self.check = check
        self.on_progress = on_progress
        self.state_store = state_store


class _Outcome:
    """What one run of the workload gave."""

    def __init__(self) -> None:
        self.counts: dict[str, Any] = {}
        self.checks: dict[str, Any] = {}
        self.faults: list[dict[str, Any]] = []
        self.ends: list[tuple[float, str]] = []  # (seconds after the first post, status)
        self.node_loss: dict[str, Any] | None = None


def _run(
    cluster: LocalRayCluster,
    settings: _Settings,
    faults: FaultPlan | None,
    kill_node_at: float | None,
    steps: list[tuple[float, str, str | None]],
    phase: str,
) -> _Outcome:
    outcome = _Outcome()
    jobs: list[JobContext] = []
    removal: dict[str, Any] = {}
    kills: list[dict[str, Any]] = []
    with Runtime(backend="ray", faults=faults, state_store=settings.state_store) as runtime:
        epoch = time.time() - runtime.now  # the runtime's start, on the wall clock
        # its actors are up once exec returns: the clock starts
        runtime.exec(
            settings.flow_id, worker_id=WORKER_ID, discard_stored=settings.state_store is not None
        )
        # where the actors run, asked now: a kill at its time needs no answer from an actor
        known = runtime.processes()[WORKER_ID] if steps else {}
        start = time.time()
        killers = []
        if kill_node_at is not None:
            killers.append(
                threading.Timer(kill_node_at, _remove_busiest, (cluster, runtime, start, removal))
            )
        for at, what, routine_id in steps:
            kill: dict[str, Any] = {"what": what, "routine": routine_id}
            kills.append(kill)
            arguments = (cluster, runtime, known, start, kill)
            killers.append(threading.Timer(at, _kill_process, arguments))
        for killer in killers:
            killer.daemon = True
            killer.start()
        poster = threading.Thread(
            target=_post_all, args=(runtime, settings, jobs), name="actorflow-experiment-posts"
        )
        poster.start()
        deadline = time.monotonic() + settings.wait
        while True:
            poster.join(0.2)
            ended = sum(1 for job in list(jobs) if job.done)
            if settings.on_progress is not None:
                settings.on_progress(phase, ended, len(settings.items))
            if not poster.is_alive() and ended == len(jobs):
                break
            if time.monotonic() >= deadline:
                break
        for killer in killers:
            killer.join()
        for done in (removal, *kills):
            if "error" in done:  # the fault was not injected: say so, never report a pass
                raise done["error"]
        if settings.on_progress is not None:
            settings.on_progress(phase, sum(1 for job in jobs if job.done), len(settings.items))
        if settings.check is not None:
            outcome.checks = dict(settings.check(runtime, jobs))
        fault_log = runtime.fault_log()
        dead_letters = dict(sorted(runtime.dead_letter_counts().items()))
    statuses = Counter(job.status.value for job in jobs)
    outcome.counts = {
        "posted": len(jobs),
        "completed": statuses.get("completed", 0),
        "failed": statuses.get("failed", 0),
        "cancelled": statuses.get("cancelled", 0),
        "unfinished": sum(1 for job in jobs if not job.done),
        "dead_letters": dead_letters,
        "errors": dict(Counter(error_kind(job.error) for job in jobs if job.error).most_common(10)),
    }
    outcome.ends = [
        (job.completed_at.timestamp() - start, job.status.value)
        for job in jobs
        if job.completed_at is not None
    ]
    outcome.faults = _faults_hit(fault_log, epoch - start)
    if removal:
        outcome.node_loss = _node_loss(removal, jobs)
        outcome.faults.append(
            {
                "fault": "node removed",
                "at": round(removal["at"], 3),
                "where": removal["node"][:12],
                "jobs_hit": outcome.node_loss["jobs_in_flight"],
                "job_ids": outcome.node_loss["job_ids"],
            }
        )
    by_id = {job.job_id: job for job in jobs}
    for kill in kills:
        hit = [by_id[job_id] for job_id in kill["in_flight"] if job_id in by_id]
        outcome.faults.append(
            {
                "fault": kill["what"],
                "at": round(kill["at"], 3),
                "where": kill["name"],
                "jobs_hit": len(hit),
                "job_ids": [job.job_id for job in hit][:JOB_IDS_KEPT],
                "outcomes": dict(Counter(job.status.value for job in hit)),
            }
        )
    outcome.faults.sort(key=lambda fault: fault["at"])
    return outcome


def _post_all(runtime: Runtime, settings: _Settings, jobs: list[JobContext]) -> None:
    interval = None if settings.post_rate is None else 1.0 / settings.post_rate
    began = time.monotonic()
    for index, item in enumerate(settings.items):
        if interval is not None:
            pause = began + index * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the workload, not waiting for anything
        routine_id, slot, data, *rest = item
        metadata = rest[0] if rest else None
        _, job = runtime.post(
            settings.flow_id, routine_id, slot, data, metadata, WORKER_ID,
            timeout=settings.job_timeout,
        )  # fmt: skip
        jobs.append(job)


def _remove_busiest(
    cluster: LocalRayCluster, runtime: Runtime, start: float, removal: dict[str, Any]
) -> None:
    """Remove the node that runs most routine actors; note when, and what was in flight."""
    try:
        _remove(cluster, runtime, start, removal)
    except BaseException as exc:
        removal.clear()
        removal["error"] = exc


def _remove(
    cluster: LocalRayCluster, runtime: Runtime, start: float, removal: dict[str, Any]
) -> None:
    placement = runtime.placement()
    node = cluster.busiest_node(placement)
    routines = sorted(
        f"{worker}/{routine}"
        for worker, routines in placement.items()
        for routine, nodes in routines.items()
        if node in nodes
    )
    in_flight = [job.job_id for job in runtime.list_jobs() if not job.done]
    removal.update(
        node=node, routines=routines, in_flight=in_flight, start=start, at=time.time() - start
    )
    cluster.remove_node(node)


def _kill_process(
    cluster: LocalRayCluster,
    runtime: Runtime,
    known: Mapping[str, Any],
    start: float,
    kill: dict[str, Any],
) -> None:
    """Kill the state owner's process, or one of a routine's actors' (``kill``); note when,
    which, and the jobs in flight. ``known`` is where the actors ran when the run began; a
    process that has ended since (Ray restarted it elsewhere) is looked up again."""
    try:
        processes = known
        for _ in range(2):
            if kill["routine"] is None:
                name, process = f"state owner of {WORKER_ID}", processes["state_owner"]
            else:
                routine = kill["routine"]
                name, process = f"{routine}[0]", processes["routines"][routine][0]
            try:
                cluster.kill_process(process["pid"])
                break
            except ProcessLookupError:
                processes = runtime.processes()[WORKER_ID]
        else:
            raise RuntimeError(f"the process of {name} could not be found to be killed")
        kill["in_flight"] = [job.job_id for job in runtime.list_jobs() if not job.done]
        kill.update(at=time.time() - start, name=name, pid=process["pid"])
    except BaseException as exc:
        kill["error"] = exc


def _node_loss(removal: Mapping[str, Any], jobs: list[JobContext]) -> dict[str, Any]:
    by_id = {job.job_id: job for job in jobs}
    hit = [by_id[job_id] for job_id in removal["in_flight"] if job_id in by_id]
    ends = [job.completed_at.timestamp() for job in hit if job.completed_at is not None]
    everyone_ended = all(job.done for job in hit)
    last_end = max(ends, default=None)
    recovery = None
    if everyone_ended:
        went = removal["start"] + removal["at"]
        recovery = 0.0 if last_end is None else max(0.0, last_end - went)
    return {
        "node": removal["node"],
        "at": round(removal["at"], 3),
        "routines": list(removal["routines"]),
        "jobs_in_flight": len(hit),
        "job_ids": [job.job_id for job in hit][:JOB_IDS_KEPT],
        "outcomes": dict(Counter(job.status.value for job in hit)),
        "recovery_seconds": None if recovery is None else round(recovery, 3),
    }


def _faults_hit(log: list[dict[str, Any]], offset: float) -> list[dict[str, Any]]:
    """One entry per rule: when it first hit (seconds after the first post) and which jobs."""
    by_rule: dict[str, dict[str, Any]] = {}
    for entry in log:
        rule = by_rule.setdefault(
            entry["rule"],
            {"fault": entry["fault"], "at": entry["time"] + offset, "where": entry.get("routine"),
             "jobs": []},
        )  # fmt: skip
        rule["at"] = min(rule["at"], entry["time"] + offset)
        if entry.get("job_id") is not None:
            rule["jobs"].append(entry["job_id"])
    return [
        {
            "fault": rule["fault"],
            "rule": name,
            "at": round(rule["at"], 3),
            "where": rule["where"],
            "jobs_hit": len(set(rule["jobs"])),
            "job_ids": sorted(set(rule["jobs"]))[:JOB_IDS_KEPT],
        }
        for name, rule in by_rule.items()
    ]


def _timeline(ends: list[tuple[float, str]], width: float) -> list[dict[str, Any]]:
    """Job outcomes per ``width`` seconds after the first post."""
    if not ends:
        return []
    last = max(at for at, _ in ends)
    bins = [
        {"t": round(i * width, 3), "completed": 0, "failed": 0, "cancelled": 0}
        for i in range(int(last // width) + 1)
    ]
    for at, status in ends:
        slot = bins[max(0, int(at // width))]
        if status in slot:
            slot[status] += 1
    return bins
