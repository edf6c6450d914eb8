"""Execution backends other than the default thread backend (``actorflow.backends.ray``)."""
