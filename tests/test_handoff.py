"""The inference thread's handoff to the event loop: a real loop and a real thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from wattgate.daemon.handoff import Handoff, OneThread

POLL_S = 0.002


def poll() -> float:
    return POLL_S


def test_every_item_arrives_once_in_order_and_bursts_are_batched() -> None:
    batches: list[list[int]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        handoff: Handoff[int] = Handoff(loop, batches.append, poll)

        def produce() -> None:
            for i in range(200):  # a burst: far faster than the loop looks
                handoff.put(i)
            loop.call_soon_threadsafe(done.set)

        worker = threading.Thread(target=produce)
        worker.start()
        await asyncio.wait_for(done.wait(), 10)
        worker.join()
        while sum(map(len, batches)) < 200:
            await asyncio.sleep(POLL_S)

    asyncio.run(main())
    assert [i for batch in batches for i in batch] == list(range(200))
    # the loop was woken for the first item, then took the rest as they came, a look at a
    # time: many fewer batches than items (one a look; 100 looks would take 0.2 s)
    assert len(batches) < 100


@pytest.mark.parametrize("batching", [True, False])
def test_after_a_pause_the_next_item_wakes_the_loop(batching: bool) -> None:
    got: list[list[str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def deliver(batch: list[str]) -> None:
            got.append(batch)
            arrived.set()

        handoff: Handoff[str] = Handoff(loop, deliver, poll if batching else lambda: 0.0)
        for item in ("first", "second"):
            arrived.clear()
            threading.Thread(target=handoff.put, args=(item,)).start()
            await asyncio.wait_for(arrived.wait(), 10)
            # idle for many polls: polling has stopped, nothing is scheduled any more
            await asyncio.sleep(20 * POLL_S)
            assert not handoff.polling

    asyncio.run(main())
    assert got == [["first"], ["second"]]


def test_close_delivers_what_the_loop_has_not_looked_at_and_nothing_after() -> None:
    got: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handoff: Handoff[int] = Handoff(loop, got.extend, poll)
        def put_five() -> None:
            for i in range(5):
                handoff.put(i)

        worker = threading.Thread(target=put_five)
        worker.start()
        worker.join()  # the worker has stopped; the loop has not run since
        handoff.close()
        assert got == [0, 1, 2, 3, 4]
        # a worker that was given up on (stuck in a driver call) finishes late: dropped
        late = threading.Thread(target=handoff.put, args=(5,))
        late.start()
        late.join()
        await asyncio.sleep(5 * POLL_S)  # the wake-up it had asked for finds nothing

    asyncio.run(main())
    assert got == [0, 1, 2, 3, 4]


def test_put_after_the_loop_closed_is_harmless() -> None:
    loop = asyncio.new_event_loop()
    handoff: Handoff[int] = Handoff(loop, lambda batch: None, poll)
    loop.close()
    handoff.put(1)  # a result finished during shutdown: nobody left to deliver it to


EXIT_SCRIPT = """
import asyncio, sys, threading
from concurrent.futures import ThreadPoolExecutor
from wattgate.daemon.handoff import ExitingExecutor, end_process

async def main() -> int:
    loop = asyncio.get_running_loop()
    executor = ExitingExecutor() if sys.argv[1] == "exiting" else ThreadPoolExecutor()
    loop.set_default_executor(executor)
    loop.run_in_executor(None, threading.Event().wait)  # a call that never returns
    await asyncio.sleep(0)
    return 0

sys.exit(end_process(asyncio.run(main())))
"""


def test_the_exit_does_not_wait_for_good_for_a_call_in_the_default_executor() -> None:
    """asyncio.run waits for its default executor's threads at exit: a call given up by
    the stop (an inference wedged in the NPU) kept the daemon until systemd's SIGKILL.
    With ExitingExecutor the process ends, exit code kept. (The plain executor is run too,
    bounded, to show the script would wait: what the daemon had before.)"""
    exiting = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, "exiting"], timeout=120,
                             capture_output=True, text=True)
    assert exiting.returncode == 0, exiting.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", EXIT_SCRIPT, "plain"], timeout=5,
                       capture_output=True)


def test_one_thread_runs_calls_in_turn_in_one_thread_and_gives_back_their_outcome() -> None:
    """Calls queued together run one after another, all in the same thread (not the
    loop's), and each caller gets its own value or exception; the loop is not held: the
    first call waits for the loop to have turned three times meanwhile."""
    ran: list[tuple[int, int]] = []
    turned = threading.Event()

    def work(n: int) -> int:
        if n == 0:
            assert turned.wait(30), "the loop was held during the call"
        ran.append((n, threading.get_ident()))
        if n == 2:
            raise ValueError("two")
        return n * 10

    async def main() -> list[object]:
        worker = OneThread("wattgate-test")
        calls = [worker.run(work, n) for n in range(4)]

        async def turn() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            turned.set()

        outcomes = await asyncio.gather(*calls, turn(), return_exceptions=True)
        outcomes = outcomes[:4]
        later = await worker.run(work, 5)
        thread = worker.close()
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()  # ended once idle: not left for the exit to find
        with pytest.raises(RuntimeError):
            await worker.run(work, 6)
        return [*outcomes, later]

    outcomes = asyncio.run(main())
    assert outcomes[:2] == [0, 10] and outcomes[3:] == [30, 50]
    assert isinstance(outcomes[2], ValueError)
    assert [n for n, _ in ran] == [0, 1, 2, 3, 5]
    threads = {ident for _, ident in ran}
    assert len(threads) == 1 and threading.get_ident() not in threads
