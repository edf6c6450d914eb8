"""One way to drive every backend, sync or async, from the same test code.

``Harness.make(**options)`` returns a store with the synchronous API.  For the
async variants it is a :class:`SyncFacade` over an ``AsyncStore`` whose
coroutines run on one event loop in a background thread, so calls made from
several test threads really do run concurrently on the async store.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from actorflow.store import (
    AsyncTypedStore,
    TypedStore,
    create_async_store,
    create_store,
)

BACKENDS = ("memory", "sqlite", "redis")
MODES = ("sync", "async")


class FakeClock:
    """A clock the test moves by hand (seconds, like ``time.time``)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class LoopThread:
    """An event loop running in a daemon thread; ``run(coro)`` waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="store-test-loop", daemon=True)
        self.thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 50) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class SyncFacade:
    """The synchronous API over an async store (or async view / typed store)."""

    def __init__(self, target: Any, runner: LoopThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)  # a read-only view raises here
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if inspect.isawaitable(result):
                result = self._runner.run(result)
            if name in ("scope", "reader"):
                return SyncFacade(result, self._runner)
            return result

        return call

    def __enter__(self) -> SyncFacade:
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.run(self._target.close())

    def __repr__(self) -> str:
        return f"SyncFacade({self._target!r})"


class Harness:
    """Makes stores of one backend in one mode, and cleans them up."""

    def __init__(self, backend: str, mode: str, tmp_path: Path, redis_url: str | None) -> None:
        self.backend = backend
        self.mode = mode
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.clock: FakeClock | None = None if backend == "redis" else FakeClock()
        self.runner = LoopThread() if mode == "async" else None
        self._stores: list[Any] = []
        self._names = itertools.count()
        self._run_id = uuid.uuid4().hex[:8]

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.mode}"

    @property
    def bounded(self) -> bool:
        """Whether the backend offers max_entries and on_evict."""
        return self.backend != "redis"

    @property
    def shared_handles(self) -> bool:
        """Whether two store objects can open the same data."""
        return self.backend != "memory"

    def options(self, name: str | None = None, **options: Any) -> dict[str, Any]:
        """Backend options placing the store's data under ``name`` (new if None)."""
        name = name or f"s{next(self._names)}"
        if self.backend == "sqlite":
            options.setdefault("path", str(self.tmp_path / f"{name}.sqlite3"))
            options.setdefault("synchronous", "normal")
        if self.backend == "redis":
            options.setdefault("url", self.redis_url)
            options.setdefault("key_prefix", f"test:{self._run_id}:{name}:")
        if self.clock is not None and options.get("clock", True) is not None:
            options.setdefault("clock", self.clock)
        if options.get("clock") is None:
            options.pop("clock", None)
        return options

    def make(self, name: str | None = None, **options: Any) -> Any:
        """A new store (``name``: reopen the data of an earlier store of that name)."""
        options = self.options(name, **options)
        if self.mode == "sync":
            store: Any = create_store(self.backend, **options)
        else:
            assert self.runner is not None
            runner = self.runner

            async def build() -> Any:
                return create_async_store(self.backend, **options)

            store = SyncFacade(runner.run(build()), runner)
        self._stores.append(store)
        return store

    def typed(self, store: Any, type_: Any) -> Any:
        if self.mode == "sync":
            return TypedStore(store, type_)
        return SyncFacade(AsyncTypedStore(store._target, type_), self.runner)  # type: ignore[arg-type]

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: move the fake clock, or really wait (redis)."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    def run_threads(self, count: int, target: Callable[[int], None]) -> None:
        """Run ``target(i)`` in ``count`` threads released together; re-raise failures."""
        barrier = threading.Barrier(count)
        errors: list[BaseException] = []

        def main(i: int) -> None:
            try:
                barrier.wait(10)
                target(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=main, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(55)
        assert not any(thread.is_alive() for thread in threads), "worker threads hung"
        if errors:
            raise errors[0]

    def run_tasks(self, count: int, target: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        """Run ``target(i)`` as ``count`` concurrent tasks on the async stores' loop."""
        assert self.runner is not None

        async def main() -> None:
            await asyncio.gather(*(target(i) for i in range(count)))

        self.runner.run(main())

    def close(self) -> None:
        for store in reversed(self._stores):
            try:
                store.close()
            except Exception:
                pass
        if self.runner is not None:
            self.runner.stop()
