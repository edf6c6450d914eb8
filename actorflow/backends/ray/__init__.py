"""The Ray backend: the same flows, with every routine as a Ray actor.

``Runtime(backend="ray", ray_address=None | "auto" | "ray://host:port")``. With no address a
local Ray is started (``address="local"``, no dashboard) and stopped at shutdown; with one, the
runtime joins that cluster and leaves it running.

How a job moves:

* each routine runs as a Ray actor (``concurrency=k``: k actors, fed round robin); the worker's
  supervisor is a Ray actor that alone owns the WorkerState; routines reach it by messages;
* envelopes go from routine actor to routine actor directly, batched: one Ray call per
  downstream actor per handled batch, not one per message;
* the JobContext travels in the envelope, so ``get_current_job()`` works in the actor process;
  what a routine writes (data, trace, errors) comes back to the driver in its report;
* job accounting is by *weight*: a posted message carries weight 1; a routine that emits n
  messages gives each 1/(n+1) of its weight and reports the last share itself, together with
  its writes. A job is complete when all its weight has come back, in whatever order reports
  arrive, and never before the writes of every routine that ran for it;
* each routine actor hosts the same routine cell as the thread backend (one code path for
  activation policies, error strategies, emits, job accounting, dead letters and metrics); a
  crash (``ActorCrash``) is reported to the driver, which applies the worker's supervision
  (strategy, intensity, backoff) and tells the actors to restart: the successor takes over the
  queued data, and messages that arrived meanwhile wait for it;
* routine actors are started with Ray's restart and retry options: an actor process that dies
  (``ray.kill``, ``os._exit``) is restarted and the calls it had not finished are delivered
  again; envelopes carry ids, so a message handled twice is counted once, and WorkerState
  calls carry ids, so a call made again is applied once.

The supervisor's state can be durable: ``state_store=`` is then a zero-argument function that
creates the store (SQLite or Redis) in the supervisor's own process; each change is written
through before it is acknowledged, and a supervisor whose process died reads it back when Ray
restarts it. The start rules and the worker's lease are those of the thread backend (the
supervisor runs the same code, and renews the lease on a timer thread of its own process).

Activation policies run inside the routine's actor, with its own timers (batch timeouts,
intervals) and a flush before shutdown, as on threads.

A fault plan is applied by each routine actor, to the messages it receives and to its
activations (``_faults``); the driver gathers the fault log.

Differences from the thread backend (each refused with a clear error where it applies): no
deterministic mode or probes, and back-pressure applies only through Ray's own queues.
"""

from actorflow.backends.ray._driver import RayBackend, RayWorker
from actorflow.backends.ray._import import INSTALL_HINT, import_ray

__all__ = ["INSTALL_HINT", "RayBackend", "RayWorker", "import_ray"]
