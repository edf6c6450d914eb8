"""State isolation: one worker, three routines, three jobs.

What is shared and what is not:

* each routine counts its runs under its own WorkerState key (``routine_a`` ...);
* every job carries its own JobContext: ``job_identifier`` comes from the job's metadata and
  the ``counted`` flag set by the first routine of a job is seen downstream in that job only;
* ``_meta`` is a shared key (leading underscore) every routine may use: it counts jobs across
  the whole worker.

The routines are wired ``routine_a -> routine_b -> routine_c``. A routine forwards only data
that was *posted* to it (its ``input`` slot); data arriving from upstream (its ``upstream``
slot) ends the chain there. So job 1, posted to ``routine_a``, runs A then B; job 2, posted to
``routine_b``, runs B then C; job 3, posted to ``routine_c``, runs C alone. Each job is waited
on before the next is posted, so the transcript is always the same.
"""

from __future__ import annotations

from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, get_current_job, immediate_policy


class StateDemoRoutine(Routine):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.add_slot("input")  # jobs start here
        self.add_slot("upstream")  # data forwarded by the routine before this one
        self.add_event("output", ["routine", "worker_state_count", "job_data"])
        self.set_config(routine_name=name)

        def process(slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any):
            routine_name = self.get_config("routine_name")
            job = get_current_job()

            # 1. Routine-specific state: this routine's own key, updated atomically.
            count = worker_state.increment(routine_name, "count")

            # 2. Job data: metadata is read-only and set at post(); data is per job.
            job_data = job.metadata.get("job_identifier", "not_set")
            job.set_data(f"processed_by_{routine_name}", True)

            # 3. Worker state shared by every job: count each job once, in its first routine.
            if not job.get_data("counted"):
                total_jobs = worker_state.increment("_meta", "total_jobs")
                job.set_data("counted", True)
            else:
                total_jobs = worker_state.get_routine_state("_meta")["total_jobs"]

            print(
                f"[{routine_name}] "
                f"routine_count={count}, "
                f"job_data={job_data}, "
                f"worker_total_jobs={total_jobs}"
            )

            if slot_data["input"]:  # the job started here: pass it one routine on
                self.emit(
                    "output", routine=routine_name, worker_state_count=count, job_data=job_data
                )

        self.set_logic(process)
        self.set_activation_policy(immediate_policy())


def build_flow() -> Flow:
    flow = Flow("isolation_demo")
    for name in ("routine_a", "routine_b", "routine_c"):
        flow.add_routine(StateDemoRoutine(name), name)
    flow.connect("routine_a", "output", "routine_b", "upstream")
    flow.connect("routine_b", "output", "routine_c", "upstream")
    return flow


def main() -> None:
    FlowRegistry.get_instance().register_by_name("isolation_demo", build_flow())

    with Runtime(thread_pool_size=3) as runtime:
        worker_state = runtime.exec("isolation_demo")

        print("=== Job 1: Chain A→B ===")
        _, job1 = runtime.post(
            "isolation_demo", "routine_a", "input", {}, metadata={"job_identifier": "job_1"}
        )
        job1.wait(timeout=10)

        print("\n=== Job 2: Chain B→C ===")
        _, job2 = runtime.post(
            "isolation_demo", "routine_b", "input", {}, metadata={"job_identifier": "job_2"}
        )
        job2.wait(timeout=10)

        print("\n=== Job 3: Routine C ===")
        _, job3 = runtime.post(
            "isolation_demo", "routine_c", "input", {}, metadata={"job_identifier": "job_3"}
        )
        job3.wait(timeout=10)

        # Final state: routines' own keys first, then shared '_' keys.
        print("\n=== Final WorkerState ===")
        states = worker_state.routine_states
        for routine_id in sorted(states, key=lambda key: (key.startswith("_"), key)):
            print(f"  {routine_id}: {states[routine_id]}")


if __name__ == "__main__":
    main()
