"""The exception hierarchy: one base class, one named subclass per kind of failure."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorCrash",
    "ActorflowError",
    "ClusterJoinError",
    "ConfigurationError",
    "FlowValidationError",
    "IncompleteJoinError",
    "InvalidDurationError",
    "JobFailedError",
    "JobTimeoutError",
    "QueueFullError",
    "RecordingNotFoundError",
    "RuntimeClosedError",
    "SerializationError",
    "StateAccessError",
    "StateFunctionError",
    "StateLimitError",
    "StateSerializationError",
    "UnknownFlowError",
    "WorkerFailedError",
    "WorkerLeaseHeldError",
    "WorkerLeaseLostError",
    "WorkerStateExistsError",
]


class ActorflowError(Exception):
    """Base class of every error actorflow raises on purpose."""


class ConfigurationError(ActorflowError, ValueError):
    """A bad argument or option given when configuring a routine, flow, runtime or store."""


class ClusterJoinError(ConfigurationError):
    """``Runtime(backend="ray", ray_address=...)`` could not join that Ray cluster (a wrong
    address, or a cluster with token authentication and no token for this process)."""


class InvalidDurationError(ConfigurationError):
    """A duration or TTL is not a finite number of seconds in the allowed range.

    The message names the argument, the allowed range and the value given. ``nan``, ``inf``,
    negative values and values longer than the platform can wait are refused where they are
    passed, so they never reach a timer.
    """


class FlowValidationError(ActorflowError, ValueError):
    """A flow refers to something that does not exist (routine, event or slot)."""


class UnknownFlowError(ActorflowError, LookupError):
    """No flow is registered under the requested id."""


class RecordingNotFoundError(ActorflowError, LookupError):
    """``Runtime.recording(job_id)`` asked for a job the runtime keeps no recording of (it
    records nothing, the job is unknown, or its recording was forgotten for newer ones)."""


class RuntimeClosedError(ActorflowError, RuntimeError):
    """The runtime has been shut down (or is shutting down) and accepts no more work."""


class SerializationError(ActorflowError, TypeError):
    """A value could not be encoded by the serializer in use; nothing was written or sent."""


class StateSerializationError(SerializationError):
    """A WorkerState update holds a value the worker's serializer cannot encode."""


class StateAccessError(ActorflowError, PermissionError):
    """A routine touched WorkerState that belongs to another routine without a grant."""


class StateFunctionError(ActorflowError, RuntimeError):
    """A state call raised a ``BaseException`` that is not an ``Exception``: mostly, the
    function given to ``modify_routine_state`` raised ``ActorCrash`` or ``SystemExit``.

    The original is the ``__cause__``. The state is unchanged, the supervisor goes on serving
    calls and handling crashes, and the caller gets this error at once, whether the call ran
    on its own thread or on the supervisor's. An ``Exception`` raised by the function reaches
    the caller as itself. Being an ``Exception``, this error goes through a routine's error
    strategy like any other: it never crashes the routine's actor.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # keep the original across a process boundary (pickling drops ``__cause__``)
        return (_rebuilt_state_function_error, (self.args, self.__cause__))


def _rebuilt_state_function_error(
    args: tuple[Any, ...], cause: BaseException | None
) -> StateFunctionError:
    error = StateFunctionError(*args)
    error.__cause__ = cause
    return error


class StateLimitError(ActorflowError, ValueError):
    """A WorkerState update would exceed the configured size limits."""


class QueueFullError(ActorflowError, RuntimeError):
    """A bounded slot or mailbox is full and the overflow policy refused the message."""


class JobFailedError(ActorflowError, RuntimeError):
    """Raised by helpers that wait for a job's result when the job failed."""


class IncompleteJoinError(ActorflowError, RuntimeError):
    """A join's data waited for a slot whose data can no longer come (or stopped waiting at
    its timeout or at shutdown), with ``all_slots_ready_policy(on_incomplete="fail")``."""


class JobTimeoutError(ActorflowError, TimeoutError):
    """A job ran longer than its timeout."""


class WorkerFailedError(ActorflowError, RuntimeError):
    """A worker crossed its supervisor's restart intensity and stopped."""


class WorkerStateExistsError(ActorflowError, RuntimeError):
    """A worker was started without ``restore=True`` on a worker id whose state is stored.

    Nothing was deleted. ``exec(..., restore=True)`` continues from the stored state;
    ``exec(..., discard_stored=True)`` deletes it and starts empty.
    """


class WorkerLeaseHeldError(ActorflowError, RuntimeError):
    """Another runtime owns the worker id in the state store (it holds the worker's lease).

    Two runtimes running one worker id on one store would lose each other's updates, so the
    second start is refused. The lease ends when its owner stops the worker, or when the owner
    has not renewed it for the lease's duration (its process died);
    ``exec(..., take_over=True)`` takes it at once.
    """


class WorkerLeaseLostError(ActorflowError, RuntimeError):
    """The worker's lease was taken by another runtime; this worker's state calls are refused.

    The worker stopped writing to the store when it found out: every state call of it raises
    this error from then on. The new owner started from the stored state.
    """


class ActorCrash(BaseException):
    """Raised inside a routine to crash its actor (the supervisor restarts it).

    A ``BaseException`` on purpose: logic exceptions (``Exception``) never kill an actor, they
    go through the routine's error strategy.
    """
