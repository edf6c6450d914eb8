"""A uvicorn server in a background thread: what ``Runtime.serve_monitor`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

import uvicorn
from loguru import logger
from starlette.types import ASGIApp

from actorflow.errors import ConfigurationError

__all__ = ["WebServer"]

START_TIMEOUT = 10.0
"""Seconds :class:`WebServer` waits for uvicorn to start serving."""

STOP_TIMEOUT = 5
"""Seconds :meth:`WebServer.close` waits for the requests in flight and the thread."""


class _Server(uvicorn.Server):
    """A uvicorn server that tells a threading.Event once it serves (or gave up)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class WebServer:
    """An ASGI app served by uvicorn from a daemon thread, on a socket bound before it returns.

    Attributes:
        url: where it answers, e.g. ``http://127.0.0.1:8080`` (no trailing slash; a wildcard
            host shows as loopback).
        port: the port it listens on (``port=0`` picks a free one).
        host: the address it was asked to listen on.

    ``close()`` (or leaving a ``with`` block) stops it; ``stop()`` is the same.
    """

    def __init__(
        self,
        app: ASGIApp,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        thread_name: str = "actorflow-web",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an int from 0 to 65535, got {port!r}")
        if not isinstance(host, str):
            raise ConfigurationError(f"host must be a str, got {host!r}")
        try:
            self._socket = _listen(host, port)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc
        self.host = host
        self.port: int = int(self._socket.getsockname()[1])
        shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = (
            f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"
        )
        self._on_close = on_close
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=STOP_TIMEOUT,
        )
        self._server = _Server(config)
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=thread_name, daemon=True)
        self._thread.start()
        if not self._server.ready.wait(START_TIMEOUT) or not self._server.started:
            self.close()
            raise ConfigurationError(f"the web server at {self.url} did not start")
        logger.info("web app serving at {}", self.url)

    def _serve(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException:  # logged: nobody joins this thread for its result
            logger.opt(exception=True).error("web server at {} failed", self.url)
        finally:
            self._server.ready.set()
            self._socket.close()

    @property
    def running(self) -> bool:
        """True until :meth:`close`."""
        return not self._closed and self._thread.is_alive()

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving: end the event streams, let requests in flight finish (up to
        ``timeout`` seconds) and wait for the thread. Calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._on_close is not None:
            self._on_close()
        self._server.should_exit = True
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout + 1.0)
        with contextlib.suppress(OSError):
            self._socket.close()
        logger.info("web app at {} stopped", self.url)

    stop = close

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WebServer({self.url}, {'running' if self.running else 'stopped'})"
