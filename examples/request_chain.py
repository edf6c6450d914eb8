"""Request chain data: ``auth`` resolves the caller, ``business`` downstream acts on it.

``auth`` validates the request's token and puts ``user_id`` and ``permissions`` into the job's
data; ``business`` reads them from the JobContext it receives with the message. The requests
are posted together and run at the same time (``auth`` runs as two actors and alice's token
check is slow, so bob's request usually reaches ``business`` first), yet neither job ever sees
the other's user: the JobContext travels inside each message, it is not a global. A request
with an unknown token fails its own job and nobody else's.
"""

from __future__ import annotations

import time
from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, get_current_job

TOKENS = {
    "tok-alice": {"user_id": "alice", "permissions": ["read", "admin"], "check_seconds": 0.3},
    "tok-bob": {"user_id": "bob", "permissions": ["read"], "check_seconds": 0.0},
}


class Auth(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.add_slot("request")
        self.add_event("authenticated", ["action"])
        self.set_concurrency(2)  # stateless, so two requests may be checked at once

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        for request in slot_data["request"]:
            account = TOKENS.get(request["token"])
            if account is None:
                raise PermissionError("unknown token")  # fails this job only
            time.sleep(account["check_seconds"])  # a slow identity provider, for alice
            job.set_data("user_id", account["user_id"])
            job.set_data("permissions", account["permissions"])
            job.trace("auth", "authenticated", {"user_id": account["user_id"]})
            worker_state.increment("_stats", "authenticated")
            self.emit("authenticated", action=request["action"])


class Business(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.add_slot("request")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        user_id = job.get_data("user_id")
        permissions = job.get_data("permissions", [])
        for request in slot_data["request"]:
            action = request["action"]
            allowed = action == "read_report" or "admin" in permissions
            job.set_data("result", f"{action} {'allowed' if allowed else 'denied'} for {user_id}")
            # Which request is this? The metadata was set by the caller at post().
            job.set_data("saw_own_user", user_id == job.metadata["caller"])
            worker_state.increment("_stats", "allowed" if allowed else "denied")


def build_flow() -> Flow:
    flow = Flow("requests")
    flow.add_routine(Auth(), "auth")
    flow.add_routine(Business(), "business")
    flow.connect("auth", "authenticated", "business", "request")
    return flow


def main() -> None:
    FlowRegistry.get_instance().register(build_flow())
    requests = [
        ("alice", {"token": "tok-alice", "action": "delete_report"}),
        ("bob", {"token": "tok-bob", "action": "delete_report"}),
        ("mallory", {"token": "tok-forged", "action": "read_report"}),
    ]
    with Runtime() as runtime:
        worker_state = runtime.exec("requests")
        # Post all three before waiting for any: they run concurrently.
        jobs = [
            runtime.post("requests", "auth", "request", body, metadata={"caller": caller})[1]
            for caller, body in requests
        ]
        for job in jobs:
            job.wait(timeout=10)

        for job in jobs:
            print(f"{job.metadata['caller']}: {job.status.value}")
            if job.error:
                print(f"  error: {job.error}")
                continue
            for key in ("user_id", "permissions", "result", "saw_own_user"):
                print(f"  {key}: {job.get_data(key)}")
        print(f"stats: {dict(sorted(worker_state.get_routine_state('_stats').items()))}")


if __name__ == "__main__":
    main()
