"""Start a throwaway ``redis-server`` on a free loopback port (tests and benchmarks).

    with running_redis_server() as url:      # "redis://127.0.0.1:PORT/0"
        ...

The server listens on 127.0.0.1 only, keeps nothing on disk (``--save ""
--appendonly no``, working directory in a temporary folder) and is stopped on
exit.  Readiness is a ``PING`` retried a bounded number of times; between tries
the helper waits on the server process itself, so a server that dies at start-up
is reported at once with its log.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RedisServerUnavailable", "find_redis_server", "running_redis_server"]


class RedisServerUnavailable(RuntimeError):
    """No ``redis-server`` executable, or it would not start."""


def find_redis_server() -> str | None:
    """Path of the ``redis-server`` executable on PATH, if any."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ping(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def _start(
    executable: str, directory: Path, tries: int, interval: float
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    log = directory / f"redis-{port}.log"
    command = [
        executable,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(log),
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for _ in range(tries):
        if _ping(port):
            return process, port
        try:
            process.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            continue
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RedisServerUnavailable(
            f"redis-server exited with {process.returncode} at start-up:\n{text[-2000:]}"
        )
    _stop(process)
    raise RedisServerUnavailable(f"redis-server on port {port} did not answer PING")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running_redis_server(
    executable: str | None = None, *, tries: int = 100, interval: float = 0.05
) -> Iterator[str]:
    """Run a private redis-server for the duration of the block; yields its URL.

    ``tries`` PINGs are made ``interval`` seconds apart at most (5 s by default).
    Raises :class:`RedisServerUnavailable` if there is no ``redis-server`` or it
    does not come up (a port taken in the meantime is retried on another port).
    """
    executable = executable or find_redis_server()
    if executable is None:
        raise RedisServerUnavailable("redis-server is not installed (not found on PATH)")
    directory = Path(tempfile.mkdtemp(prefix="actorflow-redis-"))
    try:
        for attempt in range(3):
            try:
                process, port = _start(executable, directory, tries, interval)
                break
            except RedisServerUnavailable:
                if attempt == 2:
                    raise
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
