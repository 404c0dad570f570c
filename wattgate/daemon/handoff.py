"""Items from a worker thread to the event loop, without waking the loop for every one.

`loop.call_soon_threadsafe` wakes the loop through its self-pipe. Waking a sleeping thread
on another core costs the waker, not the woken: measured on a 2-core KVM guest, about 18 us
of the calling thread's time per call. The inference thread hands over a result per
invocation, ~1000 a second with a small model, and is the thread everything waits on: that
was 2 % of its time, and each result then went out to subscribers on its own.

A Handoff wakes the loop for the first item only when `poll_s()` says to batch. The loop
then looks again every poll_s for as long as items keep coming, and takes whatever arrived
meanwhile as one batch; the first look that finds nothing ends the polling, and the next
item wakes the loop again. An item then waits up to poll_s (plus the event loop's
millisecond timer resolution), the price of fewer wake-ups and of batches the hub can send
each subscriber in one write: worth it only when the fan-out is wide, so poll_s() may say 0,
and then every item wakes the loop as call_soon_threadsafe would.

`in_own_thread` is the other way for one call: run it in a thread and await its outcome;
`OneThread` runs such calls one after another in a thread kept for them (a client's
images, model loads: see why there); `end_process` ends the process past such a thread
that never came back. `ExitingExecutor` is the event loop's default executor, whose
threads the exit waits for a short time only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generic, Optional, TypeVar

T = TypeVar("T")

EXECUTOR_EXIT_S = 1.0  # at exit, the longest wait for the default executor's threads


class Handoff(Generic[T]):
    """Items put by one worker thread, delivered in order and in batches on the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[T]], None],
        poll_s: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._poll_s = poll_s
        self._items: deque[T] = deque()
        self._polling = False  # the loop will look again soon: put need not wake it
        self._timer: Optional[asyncio.TimerHandle] = None
        self._closed = False

    @property
    def polling(self) -> bool:
        """The loop will look again soon (a put now does not wake it)."""
        return self._polling

    def put(self, item: T) -> None:
        """Any thread: queue item for the loop.

        The append comes before the flag is read, and the loop clears the flag before it
        looks at the queue a last time, so one of the two always sees the item."""
        if self._closed:  # a stopped worker that was stuck (a hung driver call) came back
            return
        self._items.append(item)
        if not self._polling:
            self._polling = True
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to deliver to
                self._loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """On the loop: deliver what has arrived; keep polling while items come."""
        items = self._take()
        try:
            if items:
                self._deliver(items)
        finally:  # a failed delivery must not leave the flag set with nobody looking
            if self._timer is None:
                poll = self._poll_s() if items else 0.0
                if poll > 0:
                    self._timer = self._loop.call_later(poll, self._on_timer)
                else:
                    self._polling = False
                    if self._items:  # put saw the flag still set: look again
                        self._polling = True
                        self._loop.call_soon(self.drain)

    def close(self) -> None:
        """On the loop, after the worker thread has stopped: deliver the rest, stop polling,
        and drop whatever a worker thread that did not stop in time puts later."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items = self._take()
        if items:
            self._deliver(items)

    def _on_timer(self) -> None:
        self._timer = None
        self.drain()

    def _take(self) -> list[T]:
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items


Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _run_call(call: Call) -> None:
    """Run a call off the loop and hand its outcome to its future on the loop."""
    loop, future, func, args = call

    def settle(set_outcome: Callable[[Any], None], outcome: Any) -> None:
        if not future.done():  # not cancelled (the daemon stopping) meanwhile
            set_outcome(outcome)

    try:
        done: tuple[Callable[[Any], None], Any] = (future.set_result, func(*args))
    except BaseException as exc:
        done = (future.set_exception, exc)
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
        loop.call_soon_threadsafe(settle, *done)


async def in_own_thread(name: str, func: Callable[..., T], *args: Any) -> T:
    """func(*args) in a daemon thread of its own named `name`, off the event loop.

    Not in the loop's executor: Python waits for its threads at exit, so a call stuck in
    a driver (a hung NPU invoke, or a wait for the model that such an invoke holds) would
    keep the daemon from ever exiting. A stuck call here is abandoned at exit, as the
    pipeline's own threads are."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    threading.Thread(target=_run_call, args=((loop, future, func, args),), name=name,
                     daemon=True).start()
    return await future


class OneThread:
    """Calls run one after another in one long-lived daemon thread, off the event loop;
    abandoned at exit as in_own_thread's are.

    For calls that allocate large, short-lived buffers (a client's image decoded: up to
    MAX_DECODE_BYTES; a model loaded). glibc's malloc gives threads arenas of their own,
    up to 8 a core, and an arena keeps what is freed at the top of its heap for the next
    allocation. A new thread a call spread those buffers over every arena, each keeping
    its last one: the daemon's resident memory grew by hundreds of MiB and stayed there
    (on 2 cores, 129 to 423 MiB after 25 large client images). One thread allocates from
    one arena, so what is kept is one call's worth. A call that hangs holds up the calls
    after it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Optional[Call]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """func(*args) in the thread, after the calls queued before it."""
        if self._closed:
            raise RuntimeError(f"{self.name}: closed, no more calls")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, func, args))
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        return await future

    def close(self) -> Optional[threading.Thread]:
        """No more calls: the thread ends after those queued (at once if it has none), and
        is returned to be joined; None if it never started. Left running, an idle thread
        would be taken at exit for one stuck in a call (end_process)."""
        self._closed = True
        self._calls.put(None)
        return self._thread

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            _run_call(call)


def join_within(threads: Iterable[threading.Thread], wait_s: float) -> None:
    """Wait for the threads to end, wait_s in all at most: at a stop, threads left in a
    call that hangs are not waited for (end_process names them)."""
    deadline = time.monotonic() + wait_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class ExitingExecutor(ThreadPoolExecutor):
    """The event loop's default executor: at exit (asyncio.run shuts it down, waiting) the
    calls still running are waited for EXECUTOR_EXIT_S at most, not for good.

    Calls that the stop gave up (a reload handing a model to an inference that hangs in
    the NPU, a write stuck in a driver) still run in it; a plain ThreadPoolExecutor kept
    the process until systemd's SIGKILL. What is still running then is named by
    `end_process`, which ends the process past it."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)
        if wait:
            join_within(list(self._threads), EXECUTOR_EXIT_S)


def end_process(code: int) -> int:
    """code, for the caller to exit with; or, when a thread is still running (a call
    abandoned in a driver, see `in_own_thread`), no return: the process ends here.

    Python's finalization ends a daemon thread that asks for the GIL back by unwinding its
    stack (pthread_exit). A thread in OpenCV or TFLite asks for it from C++ frames, and the
    unwinding there ends in std::terminate: an orderly stop became a SIGABRT, a failed unit
    and a core dump. Called once everything that matters is closed, this flushes the logs
    and the standard streams and exits without finalizing, as the kernel would have ended
    the thread anyway."""
    left = [thread.name for thread in threading.enumerate()
            if thread is not threading.current_thread()]
    if not left:
        return code
    logging.getLogger(__name__).info(
        "exiting with %d thread(s) still in a call: %s", len(left), ", ".join(left))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
