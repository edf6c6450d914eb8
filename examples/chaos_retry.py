"""Order processing under chaos: 10% message loss and a crashing routine.

Retries absorb the card network's transient errors, the supervisor restarts the shipping actor
when it crashes, and job timeouts end the orders whose messages were lost. The experiment runs
the workload once without faults and once under the fault plan, deterministically (the same
seed gives this same report on every run), and every order is accounted for: completed or
failed, none left hanging.
"""

from __future__ import annotations

from actorflow import ErrorStrategy, Flow, Routine
from actorflow.experiments import run_experiment
from actorflow.faults import FaultPlan


def step(name: str, nxt: str | None) -> Routine:
    routine = Routine()
    routine.add_slot("in")
    if nxt:
        routine.add_event("out")

    def logic(slot_data, policy_message, worker_state):
        order = slot_data["in"][0]
        worker_state.increment("_totals", name)
        if nxt:
            routine.emit("out", **order)

    routine.set_logic(logic)
    return routine


flow = Flow("orders")
flow.add_routine(step("validate", "reserve"), "validate")
flow.add_routine(step("reserve", "charge"), "reserve")
flow.add_routine(step("charge", "ship"), "charge")
flow.add_routine(step("ship", None), "ship")
flow.connect("validate", "out", "reserve", "in")
flow.connect("reserve", "out", "charge", "in")
flow.connect("charge", "out", "ship", "in")
flow.get_routine("charge").set_error_handler(
    ErrorStrategy.RETRY(max_retries=4, delay=0.2, backoff=2.0, retry_on=ConnectionError)
)

plan = (
    FaultPlan(seed=2026, lost_message_timeout=10.0)
    .drop(p=0.1)  # lose 10% of all messages
    .raise_in("charge", ConnectionError("card network busy"), p=0.3)
    .crash("ship", on_message=40)
)

report = run_experiment(
    flow,
    workload=[("validate", "in", {"order": i, "amount": 10 + i % 7}) for i in range(200)],
    faults=plan,
    steady_state=lambda r: r["completed"] + r["failed"] == r["posted"],
    job_timeout=None,  # lost messages end their orders through the plan's lost_message_timeout
    deterministic=True,
)

print("posted:", report["posted"])
print("completed:", report["completed"])
print("failed:", report["failed"])
print("unfinished:", report["unfinished"])
print(
    "accounted for:",
    report["completed"] + report["failed"] + report["cancelled"] == report["posted"],
)
print("faults injected:")
for rule, count in report["faults_injected"].items():
    print(f"  {rule}: {count}")
print("errors of failed orders:")
for error, count in report["errors"].items():
    print(f"  {count} x {error}")
print("steady state before faults:", report["steady_state_before"])
print("steady state under faults:", report["steady_state_after"])
