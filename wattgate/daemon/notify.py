"""systemd service notification and the progress rule that gates the watchdog.

The daemon runs as `Type=notify` (systemd/wattgate.service). systemd then learns from us,
not from the fork, when the service is usable (`READY=1`), what it is doing (`STATUS=`),
that it is still alive (`WATCHDOG=1`), that a reload is in progress (`RELOADING=1` with
`MONOTONIC_USEC=`, then `READY=1` again) and that it is going down (`STOPPING=1`). These are
the messages of sd_notify(3) as listed in REFERENCE.md ("systemd"). Debian 12 ships systemd
252 and `Type=notify-reload` needs 253, so the unit uses `Type=notify` plus
`ExecReload=/bin/kill -HUP $MAINPID`; sending `RELOADING=1` anyway costs nothing there and
lets newer managers track the reload.

Outside systemd (a shell, a test, another init) NOTIFY_SOCKET is unset and every call is a
silent no-op, so the daemon calls the `Notifier` unconditionally instead of asking first.

`ProgressWatch` decides whether a `WATCHDOG=1` ping may be sent. A watchdog that pings from
a timer proves only that the timer thread is alive; a camera daemon whose inference thread
is stuck inside a delegate (a wedged NPU driver is the usual case) would keep pinging and
never be restarted. The rule is kept pure - timestamps come from the caller - so it can be
tested without threads or clocks.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from typing import Any, Optional

log = logging.getLogger("wattgate.notify")

# systemd-python ships no type information: its modules are Any to mypy.
_sd_daemon: Any
try:
    _sd_daemon = importlib.import_module("systemd.daemon")
except ImportError:  # pragma: no cover - systemd-python is a dependency in pyproject
    _sd_daemon = None

__all__ = [
    "DEFAULT_STALL_LIMIT",
    "Notifier",
    "ProgressWatch",
    "inherited_listener",
    "stall_limit",
    "watchdog_interval",
]

# A stage that has not moved for this long is stalled. It must exceed the slowest honest
# step: one frame interval at the lowest capture rate a power profile may set (an idle
# profile at 0.2 fps grabs every 5 s) and one invoke of the biggest model on a CPU-only
# board (seconds for a 640 px YOLO on a Cortex-A53). 20 s stays below the unit's
# WatchdogSec=30s, so a stall is noticed before systemd would act on its own.
DEFAULT_STALL_LIMIT = 20.0


def _env(environ: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def watchdog_interval(environ: Optional[Mapping[str, str]] = None) -> Optional[float]:
    """Seconds between `WATCHDOG=1` pings, or None when systemd set no watchdog.

    systemd passes `WatchdogSec=` as WATCHDOG_USEC (REFERENCE.md, "systemd"). We ping at half
    of it, as sd_watchdog_enabled(3) recommends, so one late tick of a busy event loop does
    not cost a restart. WATCHDOG_PID, when present, names the process the watchdog is meant
    for; a child that inherited the environment must not ping on the parent's behalf.
    """
    env = _env(environ)
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


def stall_limit(environ: Optional[Mapping[str, str]] = None) -> float:
    """How long a pipeline stage may stand still before the watchdog pings stop.

    DEFAULT_STALL_LIMIT, or two thirds of the unit's WatchdogSec= when that is shorter, so
    a stall always stops the pings before systemd's own deadline (a unit that asks for a
    tight watchdog accepts a tight stall limit).
    """
    interval = watchdog_interval(environ)
    if interval is None:
        return DEFAULT_STALL_LIMIT
    return min(DEFAULT_STALL_LIMIT, 2.0 * interval * 2.0 / 3.0)


class Notifier:
    """Sends sd_notify(3) messages through systemd-python; no-op without NOTIFY_SOCKET.

    Every method returns True when a datagram was sent, so the caller can log (once) that
    systemd is listening; they never raise, because a notification failure must not take
    the daemon down. `environ` exists for tests; by default the process environment is read
    on every call, the same way libsystemd does.
    """

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        self._environ = environ

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening for notifications."""
        return bool(_env(self._environ).get("NOTIFY_SOCKET")) and _sd_daemon is not None

    def _send(self, *assignments: str) -> bool:
        # One datagram per call: RELOADING=1 and MONOTONIC_USEC= must arrive together or
        # systemd (>= 253) ignores the reload notification.
        if not self.enabled:
            return False
        try:
            return bool(_sd_daemon.notify("\n".join(assignments)))
        except OSError:
            return False

    def ready(self, status: Optional[str] = None) -> bool:
        """Tell systemd the service is usable: the socket listens and the model is loaded.

        Until this arrives, `systemctl start` blocks and units ordered After= us wait; after a
        reload it ends the "reloading" state.
        """
        parts = ["READY=1"]
        if status is not None:
            parts.append("STATUS=" + _one_line(status))
        return self._send(*parts)

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status wattgate` shows (profile, fps, watts)."""
        return self._send("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        """Ping the watchdog. Call it only while `ProgressWatch.healthy()` says so."""
        return self._send("WATCHDOG=1")

    def reloading(self) -> bool:
        """Announce a reload (on SIGHUP); follow it with `ready()` once the new config is live.

        MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds at the moment the reload began; a
        manager that supports reload tracking uses it to tell this reload apart from an older
        one (REFERENCE.md, "systemd").
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Announce shutdown, so `systemctl status` says "deactivating" while sysfs is restored."""
        return self._send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time, e.g. while a large model compiles for an NPU.

        TimeoutStartSec= covers the whole start-up; a first-boot delegate compile on a slow
        board can exceed it. Each call extends the deadline to `seconds` from now.
        """
        usec = max(1, math.ceil(seconds * 1_000_000))
        return self._send(f"EXTEND_TIMEOUT_USEC={usec}")


def _one_line(text: str) -> str:
    # The notification protocol is newline-separated VAR=VALUE: a newline inside STATUS=
    # would start a bogus assignment.
    return " ".join(text.split())


def inherited_listener(unset_environment: bool = True) -> Optional[socket.socket]:
    """The listening Unix stream socket passed by wattgate.socket, or None.

    systemd passes activated sockets as fds from 3 with LISTEN_FDS/LISTEN_PID set
    (REFERENCE.md: `systemd.daemon.listen_fds()` returns fds from 3); libsystemd ignores them
    when LISTEN_PID is not our pid. The variables are unset afterwards by default so that
    child processes do not believe the fds are theirs. Only an AF_UNIX SOCK_STREAM socket in
    listening state is taken: anything else means a misconfigured socket unit, and the
    daemon should then bind its own socket rather than serve on something unexpected. Each
    fd not taken is logged as a warning saying what it is, and closed: kept silently, the
    clients of a socket unit that listens elsewhere (ListenStream= a port, ListenDatagram=)
    waited for a daemon that was never going to answer them, and nothing said why.
    """
    if _sd_daemon is None:
        return None
    fds: list[int] = _sd_daemon.listen_fds(unset_environment=unset_environment)
    if unset_environment:
        # libsystemd unsets the C environment only; os.environ is Python's own copy, and
        # subprocesses are spawned from it.
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    taken: Optional[socket.socket] = None
    for fd in fds:
        usable = _sd_daemon.is_socket_unix(fd, socket.SOCK_STREAM, listening=1)
        if usable and taken is None:
            taken = socket.socket(fileno=fd)
            continue
        what = "a second listening Unix stream socket" if usable else _what_fd(fd)
        log.warning("fd %d passed by systemd is %s, which wattgate does not serve on; "
                    "closed (see ListenStream= in wattgate.socket)", fd, what)
        with contextlib.suppress(OSError):
            os.close(fd)
    return taken


def _what_fd(fd: int) -> str:
    """What a passed fd is, in a socket unit's terms: "an AF_INET SOCK_STREAM socket"."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return "not a socket"
    with sock:
        what = f"an {sock.family.name} {sock.type.name} socket"
        if sock.type == socket.SOCK_STREAM and not sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            what += " that is not listening"
        return what


class ProgressWatch:
    """Whether the capture and inference threads are still making progress.

    The rule, checked by `healthy(now)`:

    * capture must have made progress (a frame was grabbed, gated or not) within
      `stall_limit` seconds, unless capture was deliberately paused (camera unplugged and
      waiting for hotplug, a profile that stops capture); resuming starts a fresh period.
      A camera may also stay quiet for `camera_quiet_s` first (camera.stall_s): a camera
      triggered by hardware sends nothing while the line stands still, and its supervisor
      reopens it after that long, which pauses capture here. Counted from the last frame,
      a quiet camera was a stall after the stall limit whatever camera.stall_s allowed,
      and systemd restarted the daemon whenever the line stood still for a minute.
    * inference is only required to move while it has work: from the moment a frame is
      handed to it (`work_pending`) it must complete an invoke within `stall_limit`. An idle
      scene sends no frames to the model, and an idle model is healthy - the gate exists to
      keep the NPU asleep, so "no inference for a minute" is the normal case, not a fault.
      While work stays pending, the clock runs from the later of "work arrived" and "last
      invoke finished", so a steady stream of frames with a live model stays healthy.
    * construction counts as progress for both, so the first `stall_limit` seconds cover
      opening the camera.

    A stall is not sticky: if the stuck stage moves again before systemd's WatchdogSec=
    expires, pings resume. All times are CLOCK_MONOTONIC seconds supplied by the caller
    (`time.monotonic()`); the class reads no clock itself. It holds no lock: call it from
    the event loop, or guard it.
    """

    def __init__(self, now: float, stall_limit: float = DEFAULT_STALL_LIMIT) -> None:
        if not stall_limit > 0:
            raise ValueError("stall_limit must be positive")
        self.stall_limit = stall_limit
        self.camera_quiet_s = 0.0  # camera.stall_s: how long a camera may send nothing
        self._capture_last = now
        self._capture_expected = True
        self._inference_last = now
        self._pending_since: Optional[float] = None

    def capture_progress(self, now: float) -> None:
        """The capture thread grabbed a frame (counted even when the gate drops it)."""
        self._capture_last = max(self._capture_last, now)

    def pause_capture(self) -> None:
        """Capture stopped on purpose; its silence is no longer a stall."""
        self._capture_expected = False

    @property
    def capture_paused(self) -> bool:
        """Capture was paused on purpose and has not been resumed."""
        return not self._capture_expected

    def resume_capture(self, now: float) -> None:
        """Capture is expected again; it gets a full stall_limit to deliver its first frame."""
        self._capture_expected = True
        self._capture_last = max(self._capture_last, now)

    def work_pending(self, now: float) -> None:
        """A frame was handed to the inference thread. Repeated calls keep the earliest time."""
        if self._pending_since is None:
            self._pending_since = now

    def inference_progress(self, now: float, still_pending: bool = False) -> None:
        """An invoke finished; `still_pending` when another frame is already waiting."""
        self._inference_last = max(self._inference_last, now)
        if not still_pending:
            self._pending_since = None
        elif self._pending_since is None:
            self._pending_since = now

    def work_dropped(self) -> None:
        """The frame handed to inference went with its pipeline (a reload replaced it, and
        a hung invoke is abandoned with it): nothing is pending until the new pipeline
        hands over a frame. Kept, it was a stall for good when the new pipeline had nothing
        to infer (a camera waited for, a still scene), since only a finished invoke clears it."""
        self._pending_since = None

    def stalled(self, now: float) -> list[str]:
        """Names of the stages that are stalled at `now`: "capture", "inference"."""
        out: list[str] = []
        quiet = now - self._capture_last - self.camera_quiet_s
        if self._capture_expected and quiet > self.stall_limit:
            out.append("capture")
        if self._pending_since is not None:
            since = max(self._pending_since, self._inference_last)
            if now - since > self.stall_limit:
                out.append("inference")
        return out

    def healthy(self, now: float) -> bool:
        """True when a WATCHDOG=1 ping is deserved at `now`."""
        return not self.stalled(now)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Ages of the stages, for the status view and for the log line of a stall."""
        return {
            "capture_age": now - self._capture_last,
            "capture_expected": self._capture_expected,
            "inference_age": now - self._inference_last,
            "inference_pending": self._pending_since is not None,
            "stalled": self.stalled(now),
        }
