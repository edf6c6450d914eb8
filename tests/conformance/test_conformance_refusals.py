"""Features a backend refuses by design are refused with a named error; elsewhere they work."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_kit import Backend, make_routine, register

from actorflow import ConfigurationError


def test_deterministic_mode_is_available_or_refused(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.increment("r", "n")

    register("replay", {"r": make_routine(logic)})
    if backend.refuses("deterministic"):
        with pytest.raises(ConfigurationError, match="deterministic runs"):
            backend.runtime(deterministic=True, seed=3)
        return
    with backend.runtime(deterministic=True, seed=3) as runtime:
        assert runtime.deterministic
        state = runtime.exec("replay", worker_id="w")
        _, job = runtime.post("replay", "r", "in", 1)
        assert job.wait(60)
        assert state.get_routine_state("r") == {"n": 1}
        assert runtime.delivery_log() == [("w", "r", "in", job.job_id)]
