"""The worker's supervisor: the one owner of its WorkerState (internal).

Every read and write of a worker's state is a message handled here, one at a time, so a
read-modify-write can never interleave with another. Values are stored encoded, so a reader
always gets a fresh copy and no caller can mutate the stored state behind its back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actorflow import _state_codec as codec
from actorflow._reply import Reply

__all__ = ["StateCall", "SupervisorCore"]


class StateCall:
    """A request to the supervisor (internal)."""

    __slots__ = ("arg", "extra", "key", "op", "reply")
    reply_to = None

    def __init__(self, op: str, key: Any, arg: Any, extra: Any, reply: Reply) -> None:
        self.op = op
        self.key = key
        self.arg = arg
        self.extra = extra
        self.reply = reply

    @property
    def message(self) -> StateCall:
        return self


class SupervisorCore:
    """Owns the state of one worker and applies state calls in mailbox order."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._blobs: dict[str, bytes] = {}
        self._ops: dict[str, Callable[[StateCall], Any]] = {
            "get": self._get,
            "put": self._put,
            "delete": self._delete,
            "modify": self._modify,
            "increment": self._increment,
            "snapshot": self._snapshot,
        }

    # -- actor hooks -------------------------------------------------------------------
    def started(self) -> None:
        """Nothing to prepare: the state lives in this object."""

    def stopped(self) -> None:
        """Nothing to release."""

    def handle(self, call: Any) -> None:
        if not isinstance(call, StateCall):
            return
        try:
            result = self._ops[call.op](call)
        except Exception as exc:
            call.reply.set_error(exc)
        else:
            call.reply.set(result)

    # -- operations --------------------------------------------------------------------
    def _get(self, call: StateCall) -> Any:
        blob = self._blobs.get(call.key)
        return None if blob is None else codec.decode(blob)

    def _put(self, call: StateCall) -> None:
        self._blobs[call.key] = codec.encode(call.key, call.arg)

    def _delete(self, call: StateCall) -> bool:
        return self._blobs.pop(call.key, None) is not None

    def _modify(self, call: StateCall) -> Any:
        blob = self._blobs.get(call.key)
        old = None if blob is None else codec.decode(blob)
        new = call.arg(old)
        encoded = codec.encode(call.key, new)
        self._blobs[call.key] = encoded
        return codec.decode(encoded)

    def _increment(self, call: StateCall) -> int | float:
        field, by = call.arg, call.extra
        blob = self._blobs.get(call.key)
        state = {} if blob is None else codec.decode(blob)
        if not isinstance(state, dict):
            raise TypeError(
                f"increment needs the state under {call.key!r} to be a dict, "
                f"found {type(state).__name__}"
            )
        current = state.get(field, 0)
        if isinstance(current, bool) or not isinstance(current, int | float):
            raise TypeError(
                f"increment: {call.key!r}[{field!r}] is a {type(current).__name__}, not a number"
            )
        value = current + by
        state[field] = value
        self._blobs[call.key] = codec.encode(call.key, state)
        return value  # type: ignore[no-any-return]

    def _snapshot(self, call: StateCall) -> dict[str, Any]:
        visible: Callable[[str], bool] | None = call.arg
        return {
            key: codec.decode(blob)
            for key, blob in self._blobs.items()
            if visible is None or visible(key)
        }
