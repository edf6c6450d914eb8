"""The bounded memory of delivered envelope ids a Ray routine actor keeps (no Ray needed)."""

from __future__ import annotations

import pytest

from actorflow.backends.ray._recent import RecentIds

pytestmark = pytest.mark.timeout(30)


def test_ray_recent_ids_remember_the_last_capacity_ids_and_forget_the_oldest() -> None:
    recent = RecentIds(3)
    for envelope_id in ("a", "b", "c"):
        recent.add(envelope_id)
    assert [e in recent for e in "abc"] == [True, True, True] and len(recent) == 3
    recent.add("d")
    assert "a" not in recent and [e in recent for e in "bcd"] == [True, True, True]
    assert len(recent) == 3


def test_ray_recent_ids_stay_bounded_however_many_are_added() -> None:
    recent = RecentIds(100)
    for n in range(10_000):
        recent.add(f"e{n}")
    assert len(recent) == 100
    assert "e9899" not in recent and "e9900" in recent and "e9999" in recent


def test_ray_recent_ids_an_id_added_again_is_not_counted_twice() -> None:
    recent = RecentIds(2)
    recent.add("a")
    recent.add("a")  # its second add must not push "b" out early
    recent.add("b")
    assert "a" in recent and "b" in recent and len(recent) == 2


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True, "3"])
def test_ray_recent_ids_refuse_a_capacity_that_is_no_positive_int(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        RecentIds(capacity)  # type: ignore[arg-type]
