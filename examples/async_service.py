"""An asyncio service: handlers post jobs and ``await job`` without blocking the event loop.

``handle_request`` is what an async web handler would do: post a job, await it, answer from
the job's data. Three requests are handled concurrently with ``asyncio.gather`` while a ticker
keeps running on the same loop, which shows that waiting for jobs never blocks it. A job that
fails resolves as well: its status and error say what happened.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, get_current_job


class Translate(Routine):
    """A slow, blocking call (0.2 s): it runs on the routine's actor thread, not on the loop."""

    WORDS = {"hello": "bonjour", "cat": "chat", "thank you": "merci"}

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("text")
        self.set_concurrency(3)

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        for text in slot_data["text"]:
            time.sleep(0.2)
            if text not in self.WORDS:
                raise LookupError(f"no translation for {text!r}")
            job.set_data("translation", self.WORDS[text])


async def handle_request(runtime: Runtime, text: str) -> str:
    _, job = runtime.post("translate", "translate", "text", text, metadata={"text": text})
    await job  # resolves when the job ends, whatever its status
    if job.status == "completed":
        return f"{text!r} -> {job.get_data('translation')!r}"
    return f"{text!r} -> {job.status.value}: {job.error}"


async def serve(runtime: Runtime) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    answers = await asyncio.gather(
        *(handle_request(runtime, text) for text in ("hello", "cat", "dog"))
    )
    stop.set()
    await ticking
    for answer in answers:
        print(answer)
    print(f"the event loop kept running while the jobs ran: {ticks > 5}")

    # asyncio.wait_for gives a deadline to the await; the job itself keeps running.
    _, job = runtime.post("translate", "translate", "text", "thank you")
    try:
        await asyncio.wait_for(job, timeout=0.01)
    except TimeoutError:
        print("not done within 0.01 s; awaiting it again")
    await job
    print(f"'thank you' -> {job.get_data('translation')!r}")


def main() -> None:
    flow = Flow("translate")
    flow.add_routine(Translate(), "translate")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        asyncio.run(serve(runtime))


if __name__ == "__main__":
    main()
