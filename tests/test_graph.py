"""Pictures of a flow: exact Mermaid and DOT text, escaping, stable order, SVG via Graphviz."""

from __future__ import annotations

import shutil

import pytest

from actorflow import Flow, Routine
from actorflow import graph as graph_module
from actorflow.graph import GraphvizError, flow_to_dot, flow_to_mermaid, flow_to_svg


def routine(slots: tuple[str, ...] = (), events: tuple[str, ...] = ()) -> Routine:
    r = Routine()
    for slot in slots:
        r.add_slot(slot)
    for event in events:
        r.add_event(event)
    return r


def fan_out_fan_in(reverse: bool = False) -> Flow:
    """split fans out to left and right; both join in merge (two slots)."""
    specs = [
        ("split", ("in",), ("out",)),
        ("left", ("in",), ("done",)),
        ("right", ("in",), ("done",)),
        ("merge", ("a", "b"), ()),
    ]
    edges = [
        ("split", "out", "left", "in"),
        ("split", "out", "right", "in"),
        ("left", "done", "merge", "a"),
        ("right", "done", "merge", "b"),
    ]
    if reverse:
        specs.reverse()
        edges.reverse()
    flow = Flow("fan")
    for routine_id, slots, events in specs:
        flow.add_routine(routine(slots, events), routine_id)
    for edge in edges:
        flow.connect(*edge)
    return flow


MERMAID = """\
flowchart LR
    %% flow fan
    r_left["left<br/>slots: in<br/>events: done"]
    r_merge["merge<br/>slots: a, b"]
    r_right["right<br/>slots: in<br/>events: done"]
    r_split["split<br/>slots: in<br/>events: out"]
    r_left -->|"done → a"| r_merge
    r_right -->|"done → b"| r_merge
    r_split -->|"out → in"| r_left
    r_split -->|"out → in"| r_right
"""

DOT = """\
digraph "fan" {
    rankdir=LR;
    node [shape=box, fontname="Helvetica"];
    edge [fontname="Helvetica", fontsize=10];
    "left" [label="left\\nslots: in\\nevents: done"];
    "merge" [label="merge\\nslots: a, b"];
    "right" [label="right\\nslots: in\\nevents: done"];
    "split" [label="split\\nslots: in\\nevents: out"];
    "left" -> "merge" [label="done → a"];
    "right" -> "merge" [label="done → b"];
    "split" -> "left" [label="out → in"];
    "split" -> "right" [label="out → in"];
}
"""


def test_mermaid_of_a_fan_out_fan_in_flow() -> None:
    flow = fan_out_fan_in()
    assert flow_to_mermaid(flow) == MERMAID
    assert flow.to_mermaid() == MERMAID


def test_dot_of_a_fan_out_fan_in_flow() -> None:
    flow = fan_out_fan_in()
    assert flow_to_dot(flow) == DOT
    assert flow.to_dot() == DOT


def test_output_does_not_depend_on_the_order_the_flow_was_built_in() -> None:
    assert fan_out_fan_in(reverse=True).to_mermaid() == MERMAID
    assert fan_out_fan_in(reverse=True).to_dot() == DOT


def test_ids_with_special_characters_are_escaped() -> None:
    flow = Flow('odd "flow"')
    flow.add_routine(routine(("in",), ('say "hi"',)), 'a "quoted" <id>')
    flow.add_routine(routine(("x|y",)), "a-quoted-#id")  # same Mermaid id once sanitized
    flow.add_routine(routine(("in\\n",)), "back\\slash")
    flow.connect('a "quoted" <id>', 'say "hi"', "a-quoted-#id", "x|y")
    flow.connect('a "quoted" <id>', 'say "hi"', "back\\slash", "in\\n")
    assert flow.to_mermaid() == (
        "flowchart LR\n"
        "    %% flow odd #quot;flow#quot;\n"
        '    r_a__quoted___id_["a #quot;quoted#quot; #lt;id#gt;<br/>slots: in<br/>'
        'events: say #quot;hi#quot;"]\n'
        '    r_a_quoted__id["a-quoted-#35;id<br/>slots: x#124;y"]\n'
        '    r_back_slash["back\\slash<br/>slots: in\\n"]\n'
        '    r_a__quoted___id_ -->|"say #quot;hi#quot; → x#124;y"| r_a_quoted__id\n'
        '    r_a__quoted___id_ -->|"say #quot;hi#quot; → in\\n"| r_back_slash\n'
    )
    assert flow.to_dot() == (
        'digraph "odd \\"flow\\"" {\n'
        "    rankdir=LR;\n"
        '    node [shape=box, fontname="Helvetica"];\n'
        '    edge [fontname="Helvetica", fontsize=10];\n'
        '    "a \\"quoted\\" <id>" [label="a \\"quoted\\" <id>\\nslots: in\\n'
        'events: say \\"hi\\""];\n'
        '    "a-quoted-#id" [label="a-quoted-#id\\nslots: x|y"];\n'
        '    "back\\\\slash" [label="back\\\\slash\\nslots: in\\\\n"];\n'
        '    "a \\"quoted\\" <id>" -> "a-quoted-#id" [label="say \\"hi\\" → x|y"];\n'
        '    "a \\"quoted\\" <id>" -> "back\\\\slash" [label="say \\"hi\\" → in\\\\n"];\n'
        "}\n"
    )


def test_mermaid_ids_that_collide_once_sanitized_get_a_suffix() -> None:
    flow = Flow("ids")
    flow.add_routine(routine(("in",)), "a-b")
    flow.add_routine(routine(("in",)), "a_b")
    flow.add_routine(routine(("in",)), "a.b")
    node_lines = [line.split("[")[0].strip() for line in flow.to_mermaid().splitlines()[2:]]
    assert node_lines == ["r_a_b", "r_a_b_2", "r_a_b_3"]  # sorted: "a-b" < "a.b" < "a_b"


def test_a_routine_without_connections_is_still_drawn() -> None:
    flow = Flow("alone")
    flow.add_routine(routine(), "solo")
    assert flow.to_mermaid() == 'flowchart LR\n    %% flow alone\n    r_solo["solo"]\n'
    assert '    "solo" [label="solo"];\n' in flow.to_dot()


def test_svg_without_graphviz_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: None)
    with pytest.raises(
        GraphvizError, match=r"install Graphviz \(Debian and Ubuntu: apt-get install graphviz"
    ):
        flow_to_svg(fan_out_fan_in())


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's dot executable is not on PATH (Debian package graphviz)",
)
def test_svg_through_graphviz() -> None:
    svg = flow_to_svg(fan_out_fan_in())
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg
    for routine_id in ("split", "left", "right", "merge"):
        assert f">{routine_id}</text>" in svg
    assert "done → a" in svg or "done &#8594; a" in svg
