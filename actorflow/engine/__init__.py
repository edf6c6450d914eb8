"""The engine (internal, not part of the public API): what runs a flow instance.

- :mod:`~actorflow.engine.routine_cell`: the one routine path every backend hosts (activation
  policies, error strategies, emits, job accounting, dead letters, histograms);
- :mod:`~actorflow.engine.actor_host`, :mod:`~actorflow.engine.loop_host`,
  :mod:`~actorflow.engine.dispatch`: hosting a cell on a pykka actor thread, on a worker's
  event loop (async routines), or on the deterministic scheduler;
- :mod:`~actorflow.engine.worker_core`: one flow instance on threads, the supervisor of its
  routine actors; :mod:`~actorflow.engine.state_owner`: the actor that alone applies the
  worker's state operations;
- :mod:`~actorflow.engine.envelope`, :mod:`~actorflow.engine.reply`: messages and replies;
- :mod:`~actorflow.engine.job_book`, :mod:`~actorflow.engine.dead_letters`: the runtime's books
  of jobs and of messages never handled;
- :mod:`~actorflow.engine.services`, :mod:`~actorflow.engine.timers`: what every worker shares.
"""
