"""Where a worker's actors run, on every backend: ``runtime.processes()`` names the process
(and Ray node) of the state owner and of each routine actor."""

from __future__ import annotations

import os

from conformance_kit import Backend, make_routine, register


def test_processes_name_the_state_owner_and_every_routine_actor(backend: Backend) -> None:
    register(
        "placed",
        {
            "one": make_routine(lambda sd, m, ws: None),
            "two": make_routine(lambda sd, m, ws: None, concurrency=2),
        },
    )
    with backend.runtime() as runtime:
        runtime.exec("placed", worker_id="w")
        processes = runtime.processes()
    assert list(processes) == ["w"]
    owner = processes["w"]["state_owner"]
    routines = processes["w"]["routines"]
    assert {name: len(actors) for name, actors in routines.items()} == {"one": 1, "two": 2}
    pids = [owner["pid"], *(actor["pid"] for actors in routines.values() for actor in actors)]
    if backend.is_ray:  # an actor per process, none of them the driver's
        assert len(set(pids)) == 4 and os.getpid() not in pids
        assert all(isinstance(actor["node"], str) for actor in routines["two"])
    else:  # threads of this process
        assert set(pids) == {os.getpid()} and owner["node"] is None
