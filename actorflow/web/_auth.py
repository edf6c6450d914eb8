"""The bearer token that state-changing routes require (internal).

With a token, a request must carry ``Authorization: Bearer <token>`` (compared in constant
time); without one, or with another, it is answered ``401`` with ``WWW-Authenticate: Bearer``.
With no token configured, the state-changing routes are off: ``403``, saying how to turn them on.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from actorflow.errors import ConfigurationError
from actorflow.web._problems import ApiError

__all__ = ["TURN_ON", "BearerToken"]

TURN_ON = (
    "job submission and cancellation are off: give the app a token "
    "(create_app(runtime, token=...), runtime.serve_monitor(token=...) or "
    "actorflow serve --token-env VAR) and send it as 'Authorization: Bearer <token>'"
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="actorflow"'}


class BearerToken:
    """Checks the ``Authorization`` header of state-changing requests against ``token``."""

    def __init__(self, token: str | None) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigurationError("token must be a non-empty str, or None (read-only app)")
        self._token = None if token is None else token.encode("utf-8")

    @property
    def configured(self) -> bool:
        """True when state-changing routes are on."""
        return self._token is not None

    def require(self, request: Request) -> None:
        """Raise ``ApiError`` (403 or 401) unless ``request`` carries the token."""
        if self._token is None:
            raise ApiError(403, TURN_ON)
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(401, "this route needs 'Authorization: Bearer <token>'", _CHALLENGE)
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), self._token
        ):
            raise ApiError(401, "the bearer token is not the app's token", _CHALLENGE)
