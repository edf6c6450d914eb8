"""Serializers, and the helper the runtime reuses to name what cannot be encoded."""

from __future__ import annotations

import collections
import enum
import io
import socket
import sqlite3
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorflow.errors import ConfigurationError
from actorflow.store import DecodeError, MemoryStore, find_unencodable, get_serializer
from actorflow.store.serializers import (
    JSON_MAX_DEPTH,
    JsonSerializer,
    Serializer,
    describe_unencodable,
    serializer_names,
)


class Colour(enum.Enum):
    RED = 1


def _handles() -> dict[str, Any]:
    return {
        "lock": threading.Lock(),
        "socket": socket.socket(),
        "file": open(__file__, encoding="utf-8"),
        "db": sqlite3.connect(":memory:"),
    }


def _close(handles: dict[str, Any]) -> None:
    handles["socket"].close()
    handles["file"].close()
    handles["db"].close()


@pytest.mark.parametrize("name", ["json", "pickle", "cloudpickle"])
def test_handles_inside_a_state_dict_are_named_by_path_and_type(name: str) -> None:
    handles = _handles()
    try:
        for label, handle in handles.items():
            state = {"ok": [1, 2], "deps": {"inner": [0, {label: handle}]}}
            found = find_unencodable(state, name)
            assert found is not None, (name, label)
            assert found == (f"['deps']['inner'][1][{label!r}]", type(handle))
            message = describe_unencodable(state, name)
            assert type(handle).__qualname__ in message
            assert f"['deps']['inner'][1][{label!r}]" in message
    finally:
        _close(handles)


def test_lambdas_are_refused_by_json_and_pickle_but_not_cloudpickle() -> None:
    state = {"callbacks": [print, lambda: 0]}
    assert find_unencodable(state, "json") == ("['callbacks'][0]", type(print))
    assert find_unencodable(state, "pickle") == ("['callbacks'][1]", type(state["callbacks"][1]))
    assert find_unencodable(state, "cloudpickle") is None


def test_objects_are_searched_through_their_attributes() -> None:
    class Holder:
        def __init__(self) -> None:
            self.name = "x"
            self.lock = threading.RLock()

    found = find_unencodable({"h": [Holder()]}, "pickle")
    assert found is not None
    assert found[0] in ("['h'][0]", "['h'][0].lock")  # a local class cannot be pickled itself


def test_encodable_values_report_nothing() -> None:
    for name in serializer_names():
        assert find_unencodable({"a": [1, "x", None, 2.5]}, name) is None


@pytest.mark.parametrize(
    ("value", "path", "why"),
    [
        ({1: "a"}, "[1]", "keys must be str"),
        ({"n": float("nan")}, "['n']", "NaN"),
        ([float("inf")], "[0]", "infinity"),
        ({"big": 2**64}, "['big']", "64 bits"),
        ({"c": Colour.RED}, "['c']", "not a JSON type"),
        ({"o": collections.OrderedDict(a=1)}, "['o']", "subclass of dict"),
        ({"s": {1, 2}}, "['s']", "not a JSON type"),
        ({"b": b"bytes"}, "['b']", "not a JSON type"),
    ],
)
def test_json_refuses_what_it_cannot_hold_faithfully(value: Any, path: str, why: str) -> None:
    serializer = get_serializer("json")
    assert find_unencodable(value, serializer) is not None
    assert find_unencodable(value, serializer)[0] == path  # type: ignore[index]
    with pytest.raises(TypeError, match=why):
        serializer.dumps(value)


def test_json_refuses_cycles_and_deep_nesting() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    deep: list[Any] = []
    node = deep
    for _ in range(JSON_MAX_DEPTH + 5):
        node.append([])
        node = node[0]
    for value in (cycle, deep):
        with pytest.raises(TypeError, match="nested deeper"):
            get_serializer("json").dumps(value)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(JSON_VALUES)
def test_orjson_and_the_standard_library_agree(value: Any) -> None:
    fast, plain = JsonSerializer(use_orjson=True), JsonSerializer(use_orjson=False)
    assert fast.backend == "orjson"
    assert plain.backend == "json"
    assert fast.loads(fast.dumps(value)) == value
    assert plain.loads(plain.dumps(value)) == value
    assert fast.loads(plain.dumps(value)) == plain.loads(fast.dumps(value))


def test_get_serializer() -> None:
    assert set(serializer_names()) == {"json", "pickle", "cloudpickle"}
    for name in serializer_names():
        serializer = get_serializer(name)
        assert serializer.name == name
        assert isinstance(serializer, Serializer)
    assert get_serializer("pickle").trusted_only  # type: ignore[attr-defined]
    assert not get_serializer("json").trusted_only  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"yaml.*cloudpickle, json, pickle"):
        get_serializer("yaml")
    with pytest.raises(ConfigurationError):
        get_serializer(42)  # type: ignore[arg-type]


def test_cloudpickle_refuses_file_handles_instead_of_copying_their_contents() -> None:
    with io.StringIO("text") as handle, open(__file__, encoding="utf-8") as real:
        assert find_unencodable({"f": real}, "cloudpickle") == ("['f']", type(real))
        assert find_unencodable({"f": handle}, "cloudpickle") == ("['f']", io.StringIO)


class Upper:
    """A custom serializer: any object with name, dumps and loads."""

    name = "upper"

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError("only str")
        return value.upper().encode()

    def loads(self, data: bytes) -> Any:
        if data == b"CORRUPT":
            raise ValueError("corrupt data")
        return data.decode()


def test_custom_serializer_and_decode_errors() -> None:
    with MemoryStore(serializer=Upper()) as store:
        store.put("a", "hello")
        assert store.get("a") == "HELLO"
        assert store.get_stats()["serializer"] == "upper"
        with pytest.raises(TypeError, match=r"'b'.*'upper'"):
            store.put("b", 1)
        store.put("c", "corrupt")
        with pytest.raises(DecodeError, match="'c'"):
            store.get("c")
