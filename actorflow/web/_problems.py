"""Errors a request ends with, and how they are answered: JSON ``{"error": message}``
(internal)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ApiError"]


class ApiError(Exception):
    """Ends a request with ``status``, a JSON body ``{"error": message}`` and ``headers``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
