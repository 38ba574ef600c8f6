"""Requests that wait for another thread without holding one (ingest_api/on_loop.py): run on an
event loop's thread, each in a greenlet, while other threads set what they wait for."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ingest_api.on_loop import (
    Completion,
    Inbox,
    LoopCompletion,
    ThreadCompletion,
    completion,
    run_on_loop,
)


def test_requests_wait_on_the_loop_thread_while_it_serves_others() -> None:
    made: list[Completion] = []
    threads_used: set[int] = set()

    def request(name: str) -> str:
        threads_used.add(threading.get_ident())
        done = completion()
        made.append(done)
        assert done.wait(timeout=5)
        threads_used.add(threading.get_ident())
        return name

    async def main() -> tuple[list[str], int]:
        inbox = Inbox()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        requests = [asyncio.create_task(run_on_loop(request, f"r{n}", inbox)) for n in range(20)]
        while len(made) < 20:
            await asyncio.sleep(0.001)
        ticks_before = ticks
        # Another thread lets them go, the last first.
        setter = threading.Thread(target=lambda: [done.set() for done in reversed(made)])
        setter.start()
        answers = await asyncio.gather(*requests)
        setter.join()
        ticker.cancel()
        return answers, ticks - ticks_before

    answers, ticks_meanwhile = asyncio.run(main())

    assert answers == [f"r{n}" for n in range(20)]
    assert all(isinstance(done, LoopCompletion) for done in made)
    # Every request ran on the loop's own thread, which went on serving while they waited.
    assert len(threads_used) == 1
    assert ticks_meanwhile >= 1


def test_a_wait_that_nobody_ends_in_time_says_so_and_a_late_set_is_harmless() -> None:
    def request(_: None) -> tuple[bool, float, Completion]:
        done = completion()
        started = time.monotonic()
        return done.wait(timeout=0.05), time.monotonic() - started, done

    async def main() -> tuple[bool, float]:
        in_time, waited, done = await run_on_loop(request, None, Inbox())
        done.set()
        await asyncio.sleep(0.01)  # the late set reaches the loop, which drops it
        return in_time, waited

    in_time, waited = asyncio.run(main())

    assert in_time is False
    assert 0.05 <= waited < 1


def test_an_error_in_the_request_reaches_its_coroutine() -> None:
    def request(_: None) -> None:
        raise ValueError("the app failed")

    with pytest.raises(ValueError, match="the app failed"):
        asyncio.run(run_on_loop(request, None, Inbox()))


def test_a_cancelled_request_unwinds_where_it_waits() -> None:
    unwound = threading.Event()

    def request(_: None) -> None:
        try:
            completion().wait(timeout=5)
        finally:
            unwound.set()

    async def main() -> None:
        task = asyncio.create_task(run_on_loop(request, None, Inbox()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    assert unwound.is_set()


def test_off_the_loop_a_request_blocks_its_thread_until_set() -> None:
    done = completion()
    assert isinstance(done, ThreadCompletion)
    assert done.wait(timeout=0.01) is False

    threading.Timer(0.02, done.set).start()

    assert done.wait(timeout=5) is True
