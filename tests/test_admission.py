"""What a post admits into a worker (``actorflow.engine.admission``): the weight of each
waiting message for each routine that receives emits, and when a post asks."""

from __future__ import annotations

import itertools

import pytest

from actorflow.engine.admission import ADMIT_EVERY, Admission, reach

ORDER_FLOW = {
    ("receive", "accepted"): [("price", "in"), ("stock", "in")],
    ("price", "priced"): [("confirm", "priced")],
    ("stock", "reserved"): [("confirm", "reserved")],
}
ROUTINES = ["receive", "price", "stock", "confirm"]


def _edges(routes: dict[tuple[str, str], list[tuple[str, str]]]) -> dict[str, list[str]]:
    edges: dict[str, list[str]] = {}
    for (source, _), targets in routes.items():
        edges.setdefault(source, []).extend(target for target, _ in targets)
    return edges


def test_a_fanned_out_message_counts_once_for_each_path_to_the_join() -> None:
    assert reach(_edges(ORDER_FLOW), "confirm", ROUTINES) == {
        "receive": 2,
        "price": 1,
        "stock": 1,
        "confirm": 1,
    }
    assert reach(_edges(ORDER_FLOW), "price", ROUTINES) == {
        "receive": 1,
        "price": 1,
        "stock": 0,
        "confirm": 0,
    }


def test_a_loop_is_followed_once() -> None:
    routes = {("a", "out"): [("b", "in")], ("b", "again"): [("a", "in")]}
    assert reach(_edges(routes), "b", ["a", "b"]) == {"a": 1, "b": 1}


def test_the_backlog_weighs_each_mailbox_by_its_paths() -> None:
    sizes = dict.fromkeys(ROUTINES, 0)
    bounds = {
        "receive": {"order": 100},
        "price": {"in": 100},
        "stock": {"in": 100},
        "confirm": {"priced": 10, "reserved": 10},
    }
    admission = Admission(ORDER_FLOW, bounds, {rid: (lambda r=rid: sizes[r]) for rid in ROUTINES})
    assert admission.backlog() is None
    sizes["receive"] = 2  # 4 messages for confirm, 2 each for price and stock
    assert [admission.reaching(rid) for rid in ("price", "stock", "confirm")] == [2, 2, 4]
    assert admission.backlog() is None
    sizes["price"] = 1  # 5 for confirm: half its bound
    assert admission.backlog() == ("confirm", 5)
    sizes.update(receive=0, price=0, stock=0)
    assert admission.backlog() is None
    sizes["stock"] = 50  # half of stock's bound, and past half of confirm's
    assert admission.backlog() == ("confirm", 5)
    # a quarter of confirm's half bound is under 2: a post asks on every post
    assert list(itertools.islice(admission.tick, 3)) == [True, True, True]


def test_a_post_asks_on_the_first_and_then_every_sixteenth_post() -> None:
    admission = Admission(
        {("a", "out"): [("b", "in")]},
        {"a": {"in": 10_000}, "b": {"in": 10_000}},
        {"a": lambda: 0, "b": lambda: 0},
    )
    ticks = list(itertools.islice(admission.tick, 2 * ADMIT_EVERY))
    assert [n for n, tick in enumerate(ticks) if tick] == [0, ADMIT_EVERY]


def test_nothing_is_watched_without_emits_or_in_a_deterministic_run() -> None:
    alone = Admission({}, {"a": {"in": 4}}, {"a": lambda: 99})
    bounds = {rid: {"in": 4} for rid in ROUTINES}
    sizes = {rid: (lambda: 99) for rid in ROUTINES}
    unwatched = Admission(ORDER_FLOW, bounds, sizes, watch=False)
    for admission in (alone, unwatched):
        assert admission.backlog() is None
        assert list(itertools.islice(admission.tick, 100)) == [False] * 100


def test_the_half_of_a_bound_rounds_down_and_is_at_least_one() -> None:
    for bound, half in ((1, 1), (2, 1), (9, 4)):
        sizes = {"a": 0, "b": half - 1}
        admission = Admission(
            {("a", "out"): [("b", "in")]},
            {"a": {"in": 10_000}, "b": {"in": bound}},
            {rid: (lambda r=rid, s=sizes: s[r]) for rid in ("a", "b")},
        )
        assert admission.backlog() is None
        sizes["b"] = half
        assert admission.backlog() == ("b", half)


def test_a_post_asks_every_quarter_of_a_small_half_bound() -> None:
    admission = Admission(
        {("a", "out"): [("b", "in")]},
        {"a": {"in": 10_000}, "b": {"in": 80}},  # half 40: every 10th post
        {"a": lambda: 0, "b": lambda: 0},
    )
    ticks = list(itertools.islice(admission.tick, 25))
    assert [n for n, tick in enumerate(ticks) if tick] == [0, 10, 20]


@pytest.mark.timeout(10)
def test_the_paths_through_many_fan_outs_are_counted_without_walking_each() -> None:
    """30 diamonds in a row: 2**30 paths from the first routine to the last, counted in one
    walk of the 91 routines (each routine's count is kept)."""
    routes: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for n in range(30):
        routes[(f"j{n}", "out")] = [(f"l{n}", "in"), (f"r{n}", "in")]
        routes[(f"l{n}", "out")] = [(f"j{n + 1}", "in")]
        routes[(f"r{n}", "out")] = [(f"j{n + 1}", "in")]
    routines = [f"j{n}" for n in range(31)] + [f"{s}{n}" for n in range(30) for s in "lr"]
    assert reach(_edges(routes), "j30", routines)["j0"] == 2**30
