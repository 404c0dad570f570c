"""What every benchmark shares: the machine report, statistics, targets, and a real daemon.

The daemon is started the way systemd starts it (`python -m wattgate.cli run --config`,
optionally with a NOTIFY_SOCKET datagram listener), in a temporary directory of its own, and
measured from outside through /proc and its socket, never by importing its internals.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from wattgate.client import Client, ClientError, exit_status

Json = dict[str, Any]

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the machine ---------------------------------------------------------------------------


def _version(*packages: str) -> Optional[str]:
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return f"{package} {importlib.metadata.version(package)}"
    return None


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (x86 `model name`, Arm `Model`)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    return platform.processor() or platform.machine()


def code_version() -> Optional[str]:
    """The commit measured, with `+dirty` when wattgate/ has uncommitted changes (the
    daemon benchmarks run the working tree)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "wattgate"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> Json:
    """Where and with what a result was measured: every report carries this."""
    import cv2
    import numpy

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "tflite_runtime": _version("ai-edge-litert", "tflite-runtime") or "none",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "code": code_version(),
    }


# -- statistics ----------------------------------------------------------------------------


def summary(values: Sequence[float], digits: int = 4) -> Json:
    """min/median/max of a list of repeats (the report format every benchmark uses)."""
    if not values:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0..100), nearest rank: an observed value, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def ratio(a: Optional[float], b: Optional[float], digits: int = 4) -> Optional[float]:
    if a is None or not b:
        return None
    return round(a / b, digits)


def target(name: str, value: Optional[float], op: str, limit: float, note: str = "") -> Json:
    """One target: `value op limit` with op one of <=, <, >=; `met` is None when unmeasured."""
    met: Optional[bool] = None
    if value is not None:
        met = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
    out: Json = {"name": name, "value": value, "op": op, "limit": limit, "met": met}
    if note:
        out["note"] = note
    return out


# -- /proc readings ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (live and exited) included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


@dataclass(frozen=True)
class ThreadSample:
    """Counters of one thread at one moment."""

    cpu: float  # seconds on a CPU (schedstat: nanoseconds, not clock ticks)
    runqueue: float  # seconds runnable but waiting for a CPU
    rchar: int  # bytes read through read(2) and the like: the capture thread reads files
    sleeps: int  # voluntary context switches: blocking on a lock (the GIL too), I/O, a timer


def thread_cpu(pid: int) -> dict[int, ThreadSample]:
    """Per thread id of process `pid`: its counters now."""
    out: dict[int, ThreadSample] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
            fields = (task / "schedstat").read_text().split()
            io = (task / "io").read_text().split()
            status = (task / "status").read_text().splitlines()
            sleeps = next(line for line in status if line.startswith("voluntary_ctxt"))
            out[int(task.name)] = ThreadSample(
                int(fields[0]) / 1e9, int(fields[1]) / 1e9, int(io[io.index("rchar:") + 1]),
                int(sleeps.split()[1]))
    return out


def thread_usage(before: dict[int, ThreadSample], after: dict[int, ThreadSample],
                 wall: float) -> list[Json]:
    """Per thread over `wall` seconds, busiest first: fractions of the time on a CPU, waiting
    for one and asleep (blocked: on the GIL, a queue, I/O or a timer), plus sleeps a second.
    Roles: `main` is the event loop; `reader` the thread that read the most bytes (the
    capture thread, when the source is a file)."""
    rows = []
    zero = ThreadSample(0.0, 0.0, 0, 0)
    reads = {tid: after[tid].rchar - before.get(tid, zero).rchar for tid in after}
    reader = max(reads, key=lambda tid: reads[tid]) if reads else None
    for n, tid in enumerate(sorted(after)):
        a, b = before.get(tid, zero), after[tid]
        run, wait = (b.cpu - a.cpu) / wall, (b.runqueue - a.runqueue) / wall
        role = "main" if n == 0 else "reader" if tid == reader and reads[tid] > 1 << 20 else ""
        rows.append({"thread": n, "tid": tid, "role": role, "cpu": round(run, 4),
                     "runqueue": round(wait, 4), "asleep": round(max(0.0, 1.0 - run - wait), 4),
                     "sleeps_per_s": round((b.sleeps - a.sleeps) / wall, 1)})
    return sorted(rows, key=lambda r: -float(r["cpu"]))


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (VmRSS, what `ps` and systemd's MemoryCurrent roughly show)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- a real daemon ------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


class NotifyListener:
    """A NOTIFY_SOCKET datagram socket, as systemd listens for sd_notify(3) messages.

    Every line received is kept in `received` with its time.monotonic() arrival time. The
    tests use it too (tests/conftest.py), through `wait_for`, which fails loudly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, str]] = []

    def arrival(self, prefix: str, timeout: float) -> Optional[tuple[float, str]]:
        """(arrival time, line) of the next line received that starts with prefix; None if
        none comes within timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            start = len(self.received)
            self._receive(deadline - time.monotonic())
            for arrived, line in self.received[start:]:
                if line.startswith(prefix):
                    return arrived, line
        return None

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """The next line received that starts with prefix; AssertionError if none comes."""
        got = self.arrival(prefix, timeout)
        if got is None:
            raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.received}")
        return got[1]

    def collect(self, seconds: float) -> list[tuple[float, str]]:
        """Every line received during the next `seconds`, with its arrival time."""
        start = len(self.received)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        return self.received[start:]

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(max(0.01, timeout))
        try:
            data = self.sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            return
        now = time.monotonic()
        self.received.extend((now, line) for line in data.splitlines())

    def close(self) -> None:
        self.sock.close()


class DaemonExited(RuntimeError):
    """A daemon a benchmark started is gone: its exit status and the end of its log, which
    holds the reason (the log is deleted with the daemon's directory right after)."""

    def __init__(self, returncode: int, log: str) -> None:
        self.returncode = returncode
        super().__init__(f"bench daemon exited {exit_status(returncode)}; the end of its "
                         f"log:\n{log.rstrip()}")


def connect_when_ready(
    proc: subprocess.Popen[bytes], socket_path: Path, log: Callable[[], str], timeout: float,
    client_timeout: Optional[float] = 10.0, poll: float = 0.02,
) -> Client:
    """A client of the daemon `proc` once it has said hello on socket_path; RuntimeError with
    the daemon's log if it exits first (DaemonExited) or does not answer within timeout
    seconds. The benchmarks and the tests (tests/conftest.py) start daemons the same way."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DaemonExited(proc.returncode, log())
        try:
            return Client(str(socket_path), timeout=client_timeout)
        except ClientError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon socket never answered:\n{log()}") from None
            time.sleep(poll)


@dataclass
class DaemonRun:
    """One real daemon process in its own directory; use `daemon(...)` to get one."""

    proc: subprocess.Popen[bytes]
    root: Path
    socket_path: Path
    started: float  # time.monotonic() just before the process was spawned
    notify: Optional[NotifyListener] = None
    clients: list[Client] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")[-4000:]

    def connect(self, timeout: float = 60.0) -> Client:
        """A client that has had its hello (so the daemon is ready)."""
        client = connect_when_ready(self.proc, self.socket_path, self.log, timeout,
                                    client_timeout=timeout)
        self.clients.append(client)
        return client

    def status(self, client: Client) -> Json:
        return client.request("status")

    def wait_frames(self, client: Client, frames: int, timeout: float = 300.0,
                    poll: float = 0.05) -> Json:
        """Poll status until the pipeline has captured `frames` frames; the last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(client)
            if status.get("pipeline", {}).get("frames", 0) >= frames:
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"{frames} frames not reached: {status.get('pipeline')}")
            time.sleep(poll)

    def pause(self) -> None:
        """SIGSTOP: the daemon takes no CPU while a baseline runs in this process."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for client in self.clients:
            with contextlib.suppress(OSError):
                client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.notify is not None:
            self.notify.close()


@contextlib.contextmanager
def daemon(notify: bool = False, **sections: dict[str, Any]) -> Iterator[DaemonRun]:
    """Start `wattgate run` on a config made of `sections`; stopped (and cleaned up) on exit.

    The socket, state and sysfs journal live in a fresh temporary directory, so daemons
    started side by side share nothing. The power controller runs but does not write sysfs
    (power.enabled = false): a benchmark must not retune the CPUs of a machine others use.
    The model runs on one thread (the config default, kept explicit: the baselines in this
    process use the same)."""
    root = Path(tempfile.mkdtemp(prefix="wattgate-bench-"))
    tables: dict[str, dict[str, Any]] = {
        "daemon": {"socket": str(root / "wattgate.sock"), "state_dir": str(root / "state"),
                   "log_level": "warning"},
        "model": {"threads": 1},
        "power": {"enabled": False, "journal_dir": str(root / "journal")},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    config = root / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                        "LISTEN_PID", "JOURNAL_STREAM")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    listener = None
    if notify:
        listener = NotifyListener(root / "notify.sock")
        env["NOTIFY_SOCKET"] = str(listener.path)
    log = (root / "daemon.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattgate.cli", "run", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
        preexec_fn=_stop_with_parent(),
    )
    log.close()
    run = DaemonRun(proc, root, Path(tables["daemon"]["socket"]), started, listener)
    try:
        yield run
    except DaemonExited:
        raise
    except Exception as exc:
        # A daemon that died mid-run shows first as a closed socket or a failed request;
        # its exit status and log say why, and the log goes with `root` below.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(DAEMON_EXIT_GRACE_S)
        if proc.returncode is not None:
            raise DaemonExited(proc.returncode, run.log()) from exc
        raise
    finally:
        run.stop()
        shutil.rmtree(root, ignore_errors=True)


# how long a daemon whose socket just failed may take to be seen as exited
DAEMON_EXIT_GRACE_S = 1.0
PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> Optional[Callable[[], None]]:
    """For Popen's preexec_fn: the child gets SIGTERM when this process dies, however it
    dies (SIGKILL included), so no daemon is left rendering and inferring on a shared
    machine. prctl is resolved here, before the fork; None where there is no prctl.

    The kernel sends the signal when the forking *thread* ends: the benchmarks start their
    daemons from the main thread, which lives as long as the run."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


# -- frames on disk -------------------------------------------------------------------------


def write_scene_video(path: Path, scene: str, width: int, height: int, fps: float,
                      first_s: float, seconds: float) -> int:
    """`seconds` of a synthetic scene from `first_s` on, as an MJPG AVI; frames written.

    A video file rather than `synthetic:`: OpenCV's file source stamps a frame after it is
    decoded, as a camera driver does, while the synthetic source stamps it before rendering,
    which would count the render as pipeline latency."""
    import cv2

    from wattgate.drivers.synthetic import make_scene

    made = make_scene(scene, width, height, fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    first = round(first_s * fps)
    count = max(1, round(seconds * fps))
    for i in range(first, first + count):
        writer.write(made.frame(i))
    writer.release()
    return count


def read_video(path: Path) -> list[Any]:
    """Every frame of a video file, decoded to BGR, in order."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
