"""Batching: ``batch_size_policy`` runs the logic once per batch, and no job is left waiting.

Two routines write rows in bulk:

* ``bulk_writer`` waits for full batches of 3 (``timeout=None``): seven jobs make two full
  batches, and the seventh row waits until the runtime shuts down, which flushes it;
* ``timed_writer`` takes batches of 3 but releases a partial batch once its oldest row has
  waited 0.5 s, so two rows posted together are written together, without a shutdown.

Every job whose row was in a batch completes when the batch is written; the policy message
tells the logic why it ran (``batch``, ``timeout`` or ``flush``).
"""

from __future__ import annotations

from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, batch_size_policy


class BulkWriter(Routine):
    def __init__(self, name: str, timeout: float | None) -> None:
        super().__init__()
        self.add_slot("rows")
        self.set_config(name=name)
        self.set_activation_policy(batch_size_policy(3, timeout=timeout))

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        rows = slot_data["rows"]
        name = self.get_config("name")
        print(f"[{name}] writes rows {rows}: {policy_message}")
        worker_state.increment(name, "rows", len(rows))
        worker_state.increment(name, "batches")


def main() -> None:
    flow = Flow("batching")
    flow.add_routine(BulkWriter("bulk_writer", timeout=None), "bulk_writer")
    flow.add_routine(BulkWriter("timed_writer", timeout=0.5), "timed_writer")
    FlowRegistry.get_instance().register(flow)

    with Runtime() as runtime:
        worker_state = runtime.exec("batching")

        print("-- seven rows, batches of 3 --")
        jobs = [runtime.post("batching", "bulk_writer", "rows", n)[1] for n in range(1, 8)]
        for job in jobs[:6]:
            job.wait(timeout=10)
        print(f"jobs 1-6: {[job.status.value for job in jobs[:6]]}")
        print(f"job 7 finished within 0.3 s: {jobs[6].wait(timeout=0.3)} (its row waits)")
        print(f"bulk_writer state: {worker_state.get_routine_state('bulk_writer')}")

        print("-- two rows, released by the 0.5 s timeout --")
        timed = [runtime.post("batching", "timed_writer", "rows", n)[1] for n in (10, 11)]
        for job in timed:
            job.wait(timeout=10)
        print(f"timed jobs: {[job.status.value for job in timed]}")

        print("-- shutdown flushes what is still queued --")
        print(f"every job finished: {runtime.shutdown()}")
        print(f"job 7: {jobs[6].status.value}")


if __name__ == "__main__":
    main()
