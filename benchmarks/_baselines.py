"""Raw pykka baselines measured next to actorflow in the same run."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pykka
from _common import percentile


class _Forwarder(pykka.ThreadingActor):
    def __init__(self, nxt: pykka.ActorRef[Any] | None, total: int, done: threading.Event) -> None:
        super().__init__()
        self.nxt = nxt
        self.total = total
        self.done = done
        self.count = 0

    def on_receive(self, message: Any) -> None:
        if self.nxt is not None:
            self.nxt.tell(message)
            return
        self.count += 1
        if self.count == self.total:
            self.done.set()


class _SimpleQueueForwarder(_Forwarder):
    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


def pykka_chain(messages: int, actors: int = 3, simple_queue: bool = False) -> dict[str, float]:
    """Forward ``messages`` through a chain of ``actors`` pykka actors; messages/s and CPU."""
    cls = _SimpleQueueForwarder if simple_queue else _Forwarder
    done = threading.Event()
    ref = None
    refs = []
    for _ in range(actors):
        ref = cls.start(ref, messages, done)
        refs.append(ref)
    head = refs[-1]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(messages):
        head.tell(i)
    done.wait()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for r in refs:
        r.stop()
    return {"per_s": messages / wall, "seconds": wall, "cpu_us_per_msg": cpu / messages * 1e6}


class _Relay(pykka.ThreadingActor):
    """Passes each message on; the last of the chain sets the event the message carries."""

    def __init__(self, nxt: pykka.ActorRef[Any] | None) -> None:
        super().__init__()
        self.nxt = nxt

    def on_receive(self, message: Any) -> None:
        if self.nxt is not None:
            self.nxt.tell(message)
        else:
            message.set()


class _SimpleQueueRelay(_Relay):
    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


def pykka_round_trips(
    samples: int, actors: int = 3, simple_queue: bool = False, warm_up: int = 200
) -> dict[str, float]:
    """One message at a time through a chain of ``actors`` pykka actors, the sender waiting
    for the last to be reached (as one job at a time waits for its completion): the p50 and
    p99 of ``samples`` round trips, in ms."""
    cls = _SimpleQueueRelay if simple_queue else _Relay
    ref = None
    refs = []
    for _ in range(actors):
        ref = cls.start(ref)
        refs.append(ref)
    head = refs[-1]
    times = []
    for i in range(warm_up + samples):
        reached = threading.Event()
        t0 = time.perf_counter()
        head.tell(reached)
        reached.wait()
        if i >= warm_up:
            times.append(time.perf_counter() - t0)
    for r in refs:
        r.stop()
    return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3}


def pykka_fanout(messages_per_target: int, targets: int = 10) -> dict[str, float]:
    """One SimpleQueue actor delivering to ``targets`` actors: messages/s counting every
    message an actor received, the source's ``messages_per_target`` and the targets'
    ``messages_per_target * targets`` (as a fan-out flow counts its posts and its deliveries)."""
    done = threading.Event()
    counter = {"n": 0}
    lock = threading.Lock()
    total = messages_per_target * targets

    class Sink(pykka.ThreadingActor):
        @staticmethod
        def _create_actor_inbox() -> Any:
            return queue.SimpleQueue()

        def on_receive(self, message: Any) -> None:
            with lock:
                counter["n"] += 1
                if counter["n"] == total:
                    done.set()

    class Source(pykka.ThreadingActor):
        def __init__(self, sinks: list[Any]) -> None:
            super().__init__()
            self.sinks = sinks

        @staticmethod
        def _create_actor_inbox() -> Any:
            return queue.SimpleQueue()

        def on_receive(self, message: Any) -> None:
            for s in self.sinks:
                s.tell(message)

    sinks = [Sink.start() for _ in range(targets)]
    source = Source.start(sinks)
    t0 = time.perf_counter()
    for i in range(messages_per_target):
        source.tell(i)
    done.wait()
    wall = time.perf_counter() - t0
    source.stop()
    for s in sinks:
        s.stop()
    received = messages_per_target * (targets + 1)
    return {"per_s": received / wall, "seconds": wall, "messages": received}
