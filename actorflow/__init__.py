"""actorflow: actor-model workflows. Routines are actors, workers are supervisors, and the
JobContext travels inside every envelope."""

from loguru import logger as _logger

from actorflow.activation_policies import (
    all_slots_ready_policy,
    batch_size_policy,
    custom_policy,
    immediate_policy,
    time_interval_policy,
)
from actorflow.error_strategies import ErrorStrategy
from actorflow.errors import (
    ActorCrash,
    ActorflowError,
    ClusterJoinError,
    ConfigurationError,
    FlowValidationError,
    IncompleteJoinError,
    InvalidDurationError,
    JobTimeoutError,
    QueueFullError,
    RecordingNotFoundError,
    RuntimeClosedError,
    SerializationError,
    StateAccessError,
    StateFunctionError,
    StateLimitError,
    StateSerializationError,
    UnknownFlowError,
    WorkerFailedError,
    WorkerLeaseHeldError,
    WorkerLeaseLostError,
    WorkerStateExistsError,
)
from actorflow.flow import Connection, Flow
from actorflow.job import JobContext, JobStatus, get_current_job
from actorflow.logging import disable_logging, enable_logging
from actorflow.recording import RecordSettings
from actorflow.registry import FlowRegistry
from actorflow.routine import Routine
from actorflow.runtime import Runtime
from actorflow.state_limits import StateLimits
from actorflow.supervision import Supervision
from actorflow.worker import AsyncWorkerState, StateCache, WorkerState

_logger.disable("actorflow")

__version__ = "0.1.0"

__all__ = [
    "ActorCrash",
    "ActorflowError",
    "AsyncWorkerState",
    "ClusterJoinError",
    "ConfigurationError",
    "Connection",
    "ErrorStrategy",
    "Flow",
    "FlowRegistry",
    "FlowValidationError",
    "IncompleteJoinError",
    "InvalidDurationError",
    "JobContext",
    "JobStatus",
    "JobTimeoutError",
    "QueueFullError",
    "RecordSettings",
    "RecordingNotFoundError",
    "Routine",
    "Runtime",
    "RuntimeClosedError",
    "SerializationError",
    "StateAccessError",
    "StateCache",
    "StateFunctionError",
    "StateLimitError",
    "StateLimits",
    "StateSerializationError",
    "Supervision",
    "UnknownFlowError",
    "WorkerFailedError",
    "WorkerLeaseHeldError",
    "WorkerLeaseLostError",
    "WorkerState",
    "WorkerStateExistsError",
    "__version__",
    "all_slots_ready_policy",
    "batch_size_policy",
    "custom_policy",
    "disable_logging",
    "enable_logging",
    "get_current_job",
    "immediate_policy",
    "time_interval_policy",
]
