"""Pictures of a flow: Mermaid and Graphviz DOT text, and SVG through Graphviz.

Each routine is a node that lists its slots and events; each connection is an edge labelled
``event → slot``. Routines are sorted by id and connections by (source, event, target, slot),
so the same flow always gives the same text, whatever order it was built in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from actorflow.errors import ActorflowError


class Connection(Protocol):
    """One connection of a flow: ``source.event -> target.slot``."""

    @property
    def source(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def slot(self) -> str: ...


class Flow(Protocol):
    """What a picture of a flow reads (a :class:`actorflow.Flow` has it)."""

    @property
    def flow_id(self) -> str: ...
    @property
    def routines(self) -> Mapping[str, Any]: ...
    @property
    def connections(self) -> Sequence[Connection]: ...


__all__ = ["GraphvizError", "flow_to_dot", "flow_to_mermaid", "flow_to_svg"]

ARROW = "\u2192"  # →
_MERMAID_ENTITIES = {
    '"': "#quot;",
    "#": "#35;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "|": "#124;",
    "\n": " ",
    "\r": " ",
}
_DOT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": ""}
GRAPHVIZ_TIMEOUT = 60.0


class GraphvizError(ActorflowError, RuntimeError):
    """SVG output needs Graphviz's ``dot`` executable, which is missing or failed."""


def _sorted_routines(flow: Flow) -> list[str]:
    return sorted(flow.routines)


def _sorted_connections(flow: Flow) -> list[Connection]:
    return sorted(flow.connections, key=lambda c: (c.source, c.event, c.target, c.slot))


def _node_lines(flow: Flow, routine_id: str) -> list[str]:
    routine = flow.routines[routine_id]
    lines = [routine_id]
    if routine.slots:
        lines.append("slots: " + ", ".join(routine.slots))
    if routine.events:
        lines.append("events: " + ", ".join(routine.events))
    return lines


# -- Mermaid ---------------------------------------------------------------------------------
def _mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted Mermaid label (entity codes for the special characters)."""
    return "".join(_MERMAID_ENTITIES.get(char, char) for char in text)


def _mermaid_ids(routine_ids: list[str]) -> dict[str, str]:
    """A Mermaid node id per routine: ``r_`` plus the id with other characters as ``_``."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for routine_id in routine_ids:
        base = "r_" + re.sub(r"[^A-Za-z0-9_]", "_", routine_id)
        node_id, n = base, 2
        while node_id in taken:
            node_id, n = f"{base}_{n}", n + 1
        taken.add(node_id)
        ids[routine_id] = node_id
    return ids


def flow_to_mermaid(flow: Flow) -> str:
    """The flow as a Mermaid flowchart (``flowchart LR``), ending with a newline."""
    routine_ids = _sorted_routines(flow)
    ids = _mermaid_ids(routine_ids)
    lines = ["flowchart LR", f"    %% flow {_mermaid_text(flow.flow_id)}"]
    for routine_id in routine_ids:
        label = "<br/>".join(_mermaid_text(line) for line in _node_lines(flow, routine_id))
        lines.append(f'    {ids[routine_id]}["{label}"]')
    for c in _sorted_connections(flow):
        label = _mermaid_text(f"{c.event} {ARROW} {c.slot}")
        lines.append(f'    {ids[c.source]} -->|"{label}"| {ids[c.target]}')
    return "\n".join(lines) + "\n"


# -- Graphviz DOT ----------------------------------------------------------------------------
def _dot_string(text: str) -> str:
    """``text`` as a quoted DOT string."""
    return '"' + "".join(_DOT_ESCAPES.get(char, char) for char in text) + '"'


def flow_to_dot(flow: Flow) -> str:
    """The flow as a Graphviz ``digraph`` (left to right, one box per routine)."""
    lines = [
        f"digraph {_dot_string(flow.flow_id)} {{",
        "    rankdir=LR;",
        '    node [shape=box, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for routine_id in _sorted_routines(flow):
        label = "\\n".join(_dot_string(line)[1:-1] for line in _node_lines(flow, routine_id))
        lines.append(f'    {_dot_string(routine_id)} [label="{label}"];')
    for c in _sorted_connections(flow):
        label = _dot_string(f"{c.event} {ARROW} {c.slot}")
        lines.append(f"    {_dot_string(c.source)} -> {_dot_string(c.target)} [label={label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- SVG -------------------------------------------------------------------------------------
def flow_to_svg(flow: Flow) -> str:
    """The flow drawn by Graphviz (``dot -Tsvg``) as SVG text.

    Raises :class:`GraphvizError` when the ``dot`` executable is not on ``PATH`` (install the
    ``graphviz`` package, e.g. ``apt-get install graphviz`` on Debian) or when it fails.
    """
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizError(
            "SVG output needs Graphviz's 'dot' executable, which is not on PATH: install "
            "Graphviz (Debian and Ubuntu: apt-get install graphviz; macOS: brew install "
            "graphviz), or use the mermaid or dot format instead"
        )
    try:
        result = subprocess.run(
            [dot, "-Tsvg"],
            input=flow_to_dot(flow).encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=GRAPHVIZ_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizError(f"running {dot} -Tsvg failed: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"{dot} -Tsvg exited with {result.returncode}: {message}")
    return result.stdout.decode("utf-8")
