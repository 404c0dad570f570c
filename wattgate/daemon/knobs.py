"""Writing one knob through its driver, the order a batch of writes goes in, and reading
knobs for the status off the caller's thread.

The policy names knobs by attribute path (policies/target.py); each one goes to the driver
that knows its rules - a cpufreq governor checked against the policy's list, limits
snapped to its table, galcore's mode written by name - and through the JournaledWriter,
so its original is saved before the first write.

A read can block as a store can: the show() of a runtime-suspended device may wait for its
resume or its lock, a hung driver never answers. The status reads knobs with a KnobReader:
off the caller's thread (a read stuck in a driver keeps its thread, the others go on on
others), each waited for at most READ_TIMEOUT_S, and never more than one read of a knob at
a time, so a knob that does not answer keeps one thread, however often the status asks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional, TypeVar

from wattgate.daemon.handoff import join_within
from wattgate.daemon.logs import fields
from wattgate.drivers import cpufreq, devfreq, runtime_pm, vendor
from wattgate.drivers.sysfs import Sysfs, Writer

log = logging.getLogger("wattgate.power")
T = TypeVar("T")

# How long the status waits for a knob's read; one that takes longer is shown as timed out
# (KnobReader). A runtime resume takes hundreds of ms at most on a board that works.
READ_TIMEOUT_S = 1.0
# How long a reader thread with nothing to read stays for the next status.
READER_IDLE_S = 10.0
# At a stop, the longest wait for the reads in progress to come back (KnobReader.close).
READER_STOP_WAIT_S = 0.2


def write_knob(
    w: Writer,
    key: str,
    value: str,
    policies: Mapping[str, cpufreq.CpuPolicy],
    devices: Mapping[str, devfreq.DevfreqDevice],
) -> None:
    """Route one attribute to its driver; SysfsError (typed) when the kernel refuses,
    ValueError for an attribute no driver writes."""
    parent, _, name = key.rpartition("/")
    if key == vendor.GALCORE_GOVERN:
        vendor.set_gpu_govern(w, value)
    elif name == "control" and parent.endswith("/power"):
        runtime_pm.set_control(w, parent[: -len("/power")], value)
    elif name == "autosuspend_delay_ms" and parent.endswith("/power"):
        runtime_pm.set_autosuspend_delay(w, parent[: -len("/power")], int(value))
    elif name == "railgate_enable":
        vendor.set_railgate(w, parent, value == "1")
    elif parent in policies:
        policy = policies[parent]
        if name == "scaling_governor":
            cpufreq.set_governor(w, policy, [value])
        elif name == "scaling_min_freq":
            cpufreq.set_limits(w, policy, min_khz=int(value))
        elif name == "scaling_max_freq":
            cpufreq.set_limits(w, policy, max_khz=int(value))
        elif name == "energy_performance_preference":
            cpufreq.set_epp(w, policy, value)
        else:
            raise ValueError(f"no driver for {key}")
    elif parent in devices:
        dev = devices[parent]
        if name == "governor":
            devfreq.set_governor(w, dev, [value])
        elif name == "min_freq":
            devfreq.set_limits(w, dev, min_hz=int(value))
        elif name == "max_freq":
            devfreq.set_limits(w, dev, max_hz=int(value))
        else:
            raise ValueError(f"no driver for {key}")
    else:
        raise ValueError(f"no driver for {key}")


def read_knob(fs: Sysfs, key: str) -> Optional[str]:
    """The current value of one knob, None when it cannot be read (on the caller's thread:
    it can block, see KnobReader)."""
    if key == vendor.GALCORE_GOVERN:
        state = vendor.read_gpu_govern(fs)
        return state.current if state else None
    return fs.read_opt(key)


def write_order(key: str, value: str, current: Mapping[str, str]) -> tuple[int, int]:
    """Sort key for a batch: wake the NPU first, let it suspend last; a ceiling that rises
    goes before its floor and one that falls after it, so min <= max holds throughout
    (older kernels answer EINVAL to a transient min > max).

    A governor goes before its policy's EPP, whichever way it changes: intel_pstate
    answers EBUSY to any EPP but "performance" while the governor is performance, so
    leaving it the EPP must wait for the new governor; and going to it, the EPP a profile
    can have there is "performance", which is taken under either governor (intel_pstate
    sets it itself on the switch). Sharing one key, they went in profile-name order."""
    name = key.rsplit("/", 1)[-1]
    if name == "control":
        group = 0 if value == "on" else 9
    elif name == "autosuspend_delay_ms":
        group = 8
    elif key.startswith("class/devfreq/"):
        group = 1
    else:
        group = 2
    if name in ("scaling_max_freq", "max_freq"):
        old = current.get(key)
        rising = old is None or not old.isdigit() or int(value) >= int(old)
        return group, 0 if rising else 2
    if name in ("scaling_min_freq", "min_freq"):
        return group, 1
    if name in ("scaling_governor", "governor"):
        return group, -2
    return group, -1


class _Threads:
    """Daemon threads that run reads: one more whenever a read is queued and every thread
    is in a read, so a read that never returns keeps its thread and the others are not
    queued behind it. A thread counts as free again as soon as its read is over, before
    its outcome is published (which may bring the next read at once). A thread with
    nothing to do for READER_IDLE_S ends, and at once once closed (``close``). Not a
    ThreadPoolExecutor: its threads are joined at exit, and one stuck in a driver would
    keep the daemon from exiting."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._jobs: deque[tuple[Callable[[], Any], Callable[[Any], None]]] = deque()
        self._threads = 0
        self._running = 0  # threads in a read
        self._alive: set[threading.Thread] = set()
        self._closed = False

    def submit(self, work: Callable[[], T], publish: Callable[[T], None]) -> None:
        """Run ``work()`` on a thread, then ``publish`` its result there."""
        with self._cond:
            if len(self._jobs) + 1 > self._threads - self._running:
                # Counted once started: a thread that cannot start (RuntimeError, at a
                # task limit such as systemd's TasksMax) leaves nothing counted or queued.
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()
                self._threads += 1
                self._alive.add(thread)
            else:
                self._cond.notify()
            self._jobs.append((work, publish))

    def close(self, wait_s: float) -> None:
        """End the idle threads, waiting up to ``wait_s`` for those in a read to end too;
        from now on a thread ends as soon as it has nothing to do. One stuck in a read is
        left to it (at exit, `handoff.end_process` names the threads left: reads that hang,
        not idle ones). Reads submitted later still run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._alive)
        join_within(threads, wait_s)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._jobs) or self._closed,
                                        READER_IDLE_S)
                    if not self._jobs:  # idle for READER_IDLE_S, or closed
                        self._threads -= 1
                        return
                    work, publish = self._jobs.popleft()
                    self._running += 1
                try:
                    outcome = work()
                finally:
                    with self._cond:
                        self._running -= 1
                publish(outcome)
        finally:
            with self._cond:
                self._alive.discard(threading.current_thread())


@dataclass(eq=False)
class KnobRead:
    """One read of a knob: when it started, the knob's write count then (``stamp``: a read
    begun before a write is no value after it), and its outcome (``future``: the text, or
    None when the attribute cannot be read)."""

    key: str
    started: float
    stamp: int
    future: Future[Optional[str]] = field(default_factory=Future)
    overdue: bool = False  # logged as not returning in time (under the reader's lock)
    returned: bool = False  # the read is over, its outcome about to be set (the same)


class KnobReader:
    """Reads knobs' current values on threads of their own, at most one read of a knob at a
    time: a knob still being read when it is asked for again is not read again, its read in
    flight answers for it (``start``). A read is waited for until READ_TIMEOUT_S after it
    started, not longer (``wait``, ``pending``); one still out then shows as timed out
    (``outcome``) until it returns, logged when it is found out and when it returns."""

    def __init__(self, read: Callable[[str], Optional[str]],
                 timeout_s: Optional[float] = None) -> None:
        self._read = read
        self.timeout_s = READ_TIMEOUT_S if timeout_s is None else timeout_s
        self._lock = threading.Lock()
        self._reads: dict[str, KnobRead] = {}  # the last read started of each knob
        self._previous: dict[str, KnobRead] = {}  # the one before it (returned)
        self._threads = _Threads("wattgate-knob-read")

    def close(self, wait_s: float) -> None:
        """End the idle reader threads (at a stop; see _Threads.close)."""
        self._threads.close(wait_s)

    def start(self, stamps: Mapping[str, int]) -> dict[str, KnobRead]:
        """A read of each knob of ``stamps`` (knob: its write count): the one in flight,
        else a new one."""
        now = time.monotonic()
        out: dict[str, KnobRead] = {}
        with self._lock:
            for key, stamp in stamps.items():
                read = self._reads.get(key)
                if read is None or read.future.done():
                    fresh = KnobRead(key, now, stamp)
                    try:
                        self._threads.submit(partial(self._work, fresh),
                                             partial(self._publish, fresh))
                    except RuntimeError as exc:  # no thread can start (a task limit)
                        # Not recorded as in flight: it would answer for the knob for good
                        # and never run. No value this time; the next status tries again.
                        log.warning("cannot read %s for the status: %s", key, exc,
                                    extra=fields(knob=key))
                        continue
                    if read is not None:
                        self._previous[key] = read
                    read = self._reads[key] = fresh
                out[key] = read
        return out

    def latest(self, keys: Mapping[str, int]) -> dict[str, KnobRead]:
        """The newest answer of each knob of ``keys`` that has one, none started: its last
        read once it has returned or is out past its time, else the read before it. (A
        status that awaited its reads finds them so even when the next status has started
        new ones meanwhile.)"""
        now = time.monotonic()
        out: dict[str, KnobRead] = {}
        with self._lock:
            for key in keys:
                read = self._reads.get(key)
                if read is None:
                    continue
                if not read.future.done() and now < read.started + self.timeout_s:
                    read = self._previous.get(key, read)
                out[key] = read
        return out

    def pending(self, reads: Mapping[str, KnobRead]) -> tuple[list[Future[Optional[str]]], float]:
        """The reads still to wait for, and for how long at most."""
        now = time.monotonic()
        waiting = [read for read in reads.values()
                   if not read.future.done() and now < read.started + self.timeout_s]
        left = max((read.started + self.timeout_s - now for read in waiting), default=0.0)
        return [read.future for read in waiting], left

    def wait(self, reads: Mapping[str, KnobRead]) -> None:
        """Block until each read has returned or is READ_TIMEOUT_S old (not on the loop)."""
        futures, left = self.pending(reads)
        if futures:
            wait_futures(futures, timeout=left)

    def outcome(self, read: KnobRead, stamp: int) -> Optional[tuple[Optional[str], Optional[str]]]:
        """What the status shows of a knob's read: (text, None) once it has read, (None,
        why) while it is out past READ_TIMEOUT_S; None for no value (it does not read, it is
        still reading within its time, or it began before the knob's last write)."""
        future = read.future
        if future.done():
            try:
                text = future.result()
            except CancelledError:
                return None
            except Exception as exc:  # not a SysfsError (the read gives None for those)
                log.debug("reading %s failed: %s", read.key, exc)
                return None
            if text is None or read.stamp != stamp:
                return None
            return text, None
        age = time.monotonic() - read.started
        if age < self.timeout_s:
            return None
        with self._lock:
            if read.returned:  # its answer is on its way: no value this time
                return None
            first, read.overdue = not read.overdue, True
        if first:
            log.warning("reading %s has not returned after %g s: the status shows it as timed "
                        "out until it does", read.key, self.timeout_s, extra=fields(knob=read.key))
        return None, f"read timed out after {self.timeout_s:g} s"

    def _work(self, read: KnobRead) -> tuple[Optional[str], Optional[BaseException]]:
        if not read.future.set_running_or_notify_cancel():
            return None, None
        text: Optional[str] = None
        error: Optional[BaseException] = None
        try:
            text = self._read(read.key)
        except BaseException as exc:
            error = exc
        with self._lock:
            read.returned = True
            overdue = read.overdue
        if overdue:
            log.info("reading %s returned after %.1f s", read.key,
                     time.monotonic() - read.started, extra=fields(knob=read.key))
        return text, error

    @staticmethod
    def _publish(read: KnobRead, outcome: tuple[Optional[str], Optional[BaseException]]) -> None:
        if read.future.cancelled():
            return
        text, error = outcome
        if error is not None:
            read.future.set_exception(error)
        else:
            read.future.set_result(text)
