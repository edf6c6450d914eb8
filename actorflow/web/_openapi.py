"""``/api/openapi.json``: the OpenAPI description, collected from the endpoints' docstrings
(internal)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.schemas import SchemaGenerator

from actorflow.web._responses import json_response

__all__ = ["OpenApi"]

_BASE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "actorflow",
        "version": "1",
        "description": "Jobs, workers, flows, dead letters and metrics of an actorflow runtime.",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
}


class OpenApi:
    """Serves the description of the app it is routed in."""

    def __init__(self) -> None:
        self._generator = SchemaGenerator(_BASE)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI description of this API.
        ---
        summary: OpenAPI description
        responses:
          200: {description: "this document"}
        """
        return json_response(self._generator.get_schema(request.app.routes))
