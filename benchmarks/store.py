"""Throughput of the stores: put / get / update / range_get on every backend.

    python3 benchmarks/store.py [--rounds 5] [--quick]

Prints one JSON object per line: the median ops/s over ``rounds`` rounds (and
the spread) for each backend, mode and verb.  The redis backend runs against a
throwaway ``redis-server`` started on a free 127.0.0.1 port (skipped, with a
line saying so, when ``redis-server`` is not installed).

The store API has no batch verb, so store calls are never pipelined: each
``put``/``get`` is one round trip (``put`` is one ``MULTI``/``EXEC`` of ``SET`` +
``ZADD``).  For reference, ``redis-py-pipeline`` lines measure raw redis-py
``SET``/``GET`` sent in pipelines of 100 -- the ceiling a batch API could reach.
The async ``concurrent`` lines keep 32 calls in flight (``asyncio.gather``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _redis_server import RedisServerUnavailable, running_redis_server  # noqa: E402

from actorflow.store import create_async_store, create_store  # noqa: E402

VALUE = {"user": "ada", "visits": 42, "tags": ["a", "b", "c"], "score": 0.5}
RANGE_SIZE = 100


def emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def measure(rounds: int, n: int, run: Callable[[int], None]) -> dict[str, Any]:
    """Run ``run(n)`` ``rounds`` times; median and spread of ops/s."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        run(n)
        rates.append(n / (time.perf_counter() - started))
    return {
        "ops_per_sec": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
        "rounds": rounds,
        "ops_per_round": n,
    }


def bench_sync(name: str, store: Any, rounds: int, n: int, extra: dict[str, Any]) -> None:
    keys = [f"k{i:07d}" for i in range(n)]

    def put(count: int) -> None:
        for key in keys[:count]:
            store.put(key, VALUE)

    def get(count: int) -> None:
        for key in keys[:count]:
            store.get(key)

    def range_get(count: int) -> None:
        for i in range(count):
            start = keys[(i * 37) % (n - RANGE_SIZE)]
            store.range_get(start, "k9", RANGE_SIZE)  # 100 rows from a key in the middle

    def update(count: int) -> None:
        for i in range(count):
            store.update(keys[i % 10], lambda old: {**(old or VALUE), "visits": 1})

    for verb, run, ops in (
        ("put", put, n),
        ("get", get, n),
        ("update", update, max(20, n // 4)),
        ("range_get", range_get, max(20, n // 20)),
    ):
        result = measure(rounds, ops, run)
        if verb == "range_get":
            result["rows_per_call"] = RANGE_SIZE
        emit(backend=name, mode="sync", op=verb, **result, **extra)


def bench_async(name: str, factory: Callable[[], Any], rounds: int, n: int) -> None:
    keys = [f"k{i:07d}" for i in range(n)]

    async def main() -> None:
        store = factory()
        async with store:

            async def sequential(verb: str) -> float:
                started = time.perf_counter()
                for key in keys:
                    if verb == "put":
                        await store.put(key, VALUE)
                    else:
                        await store.get(key)
                return n / (time.perf_counter() - started)

            async def concurrent(verb: str) -> float:
                started = time.perf_counter()
                for i in range(0, n, 32):
                    batch = keys[i : i + 32]
                    if verb == "put":
                        await asyncio.gather(*(store.put(key, VALUE) for key in batch))
                    else:
                        await asyncio.gather(*(store.get(key) for key in batch))
                return n / (time.perf_counter() - started)

            for label, runner in (("sequential", sequential), ("concurrent", concurrent)):
                for verb in ("put", "get"):
                    rates = [await runner(verb) for _ in range(rounds)]
                    emit(
                        backend=name,
                        mode=f"async-{label}",
                        op=verb,
                        ops_per_sec=round(statistics.median(rates)),
                        min=round(min(rates)),
                        max=round(max(rates)),
                        rounds=rounds,
                        ops_per_round=n,
                    )

    asyncio.run(main())


def bench_raw_redis(url: str, rounds: int, n: int) -> None:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    payload = json.dumps(VALUE).encode()

    def run(verb: str) -> Callable[[int], None]:
        def go(count: int) -> None:
            for start in range(0, count, 100):
                pipe = client.pipeline(transaction=False)
                for i in range(start, min(start + 100, count)):
                    if verb == "put":
                        pipe.set(f"raw:k{i}", payload)
                    else:
                        pipe.get(f"raw:k{i}")
                pipe.execute()

        return go

    for verb in ("put", "get"):
        emit(backend="redis-py-pipeline", mode="sync", op=verb, **measure(rounds, n, run(verb)))
    client.close()


@contextmanager
def redis_url() -> Iterator[str | None]:
    try:
        with running_redis_server() as url:
            yield url
    except RedisServerUnavailable as exc:
        emit(backend="redis", skipped=str(exc))
        yield None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer operations per round")
    args = parser.parse_args()
    rounds = args.rounds
    scale = 0.2 if args.quick else 1.0

    def n_of(count: int) -> int:
        return max(RANGE_SIZE * 2, int(count * scale))

    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        with create_store("memory") as store:
            bench_sync("memory", store, rounds, n_of(20_000), {})
        for sync, count in (("full", 1_000), ("normal", 3_000)):
            path = str(Path(tmp) / f"bench-{sync}.sqlite3")
            with create_store("sqlite", path=path, synchronous=sync) as store:
                bench_sync("sqlite", store, rounds, n_of(count), {"synchronous": sync})
        bench_async("memory", lambda: create_async_store("memory"), rounds, n_of(5_000))
        path = str(Path(tmp) / "bench-async.sqlite3")
        bench_async(
            "sqlite",
            lambda: create_async_store("sqlite", path=path, synchronous="normal"),
            rounds,
            n_of(1_000),
        )
        with redis_url() as url:
            if url is not None:
                with create_store("redis", url=url, key_prefix="bench:") as store:
                    bench_sync("redis", store, rounds, n_of(2_000), {})
                bench_async(
                    "redis",
                    lambda: create_async_store("redis", url=url, key_prefix="abench:"),
                    rounds,
                    n_of(1_000),
                )
                bench_raw_redis(url, rounds, n_of(10_000))


if __name__ == "__main__":
    main()
