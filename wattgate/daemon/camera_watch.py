"""The camera supervisor: a Source that survives pulled cables, stalls and late cameras.

A daemon on a board lives for months; the camera does not stay put. `SupervisedSource`
implements the Source protocol, so the pipeline reads from it as from any source, while it:

* opens the camera when it is there (a file that appears after start, a camera plugged in
  later) and reports it unavailable until then;
* reopens on read errors, on a stall (no frame for `camera.stall_s`) and on a file cut short
  (resuming at the frame it reached; a file a new recording was written over in place is
  played from its first frame instead), after a capped exponential backoff: a broken camera
  costs one open attempt every `reopen_max_s` at worst, never a crash loop. A file cut short
  that gives nothing more and has not changed for `camera.stall_s` since ends there (with
  `camera.loop`, starts again from its first frame): its header overstates its length (a
  recording a power cut left unfinished);
* follows udev (a pyudev monitor thread on video4linux): a removed camera is lost at once;
  when a device with the same identity comes back it is reopened without waiting for the
  backoff (within 2 s), possibly under another node name. A camera that appears while
  another is open, and that the identity means before it (the twin on the first port is
  back after the daemon fell back to the other), is switched to at once, with a warning
  and no loss reported; opening another camera than before is always warned of;
* calls `on_lost(reason)` when frames stop coming and `on_back()` when they come again,
  from the reading thread, once per transition; and `on_ended(reason)` when the source ends
  (a file played to its end, or cut short and left so): no frame comes after it, and no
  `on_back()` follows a loss announced before. Once: a source that takes over an end
  already told (a reload to another file that ends at once) tells none.

Every driver call (open, read, close) runs on a worker thread of its own, one per opened
camera, so the reader can give up on a call that hangs (a stalled stream, a FIFO whose writer
went quiet): the worker is left to finish its call, closes the capture it owns and exits;
a new worker opens the camera again. Frigate's ffmpeg watchdog does the same with processes.

`read()` blocks while the camera is lost and returns None only when the source has ended (a
file played to its end) or was stopped: `stop()` wakes a blocked reader at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Generic, Literal, Optional, TypeVar

from wattgate.config import CameraConfig
from wattgate.daemon.logs import MessageId, event
from wattgate.drivers import v4l2
from wattgate.drivers.camera import (
    DEFAULT_LUMA_ROWS,
    CaptureSource,
    FileMark,
    FileState,
    Frame,
    Source,
    SourceError,
    SourceKind,
    SyntheticSource,
    no_longer,
    source_kind,
    without_password,
)
from wattgate.drivers.synthetic import SCENES

log = logging.getLogger("wattgate.camera")

State = Literal["running", "lost", "waiting", "ended"]
# What clients were told of a loss: nothing open; camera_lost, and camera_back is owed;
# or that the source ended (on_ended), after which a new loss is announced afresh, a second
# end says nothing, and frames still say camera_back.
Loss = Literal["none", "open", "closed"]
LOSS_ORDER: tuple[Loss, ...] = ("none", "open", "closed")
Opener = Callable[[str, int], Source]  # (target, start frame) -> an open source
T = TypeVar("T")


@dataclass(frozen=True)
class WatchSettings:
    """Timings of the supervisor. `reopen_max_s` is proposed as the config key
    camera.reopen_max_s; the others are fixed engineering choices."""

    reopen_min_s: float = 0.5  # first retry after a failure
    reopen_max_s: float = 30.0  # the backoff cap
    healthy_s: float = 10.0  # running this long forgives earlier failures
    poll_s: float = 0.5  # how often to look for a file or a camera that is not there
    poll_udev_s: float = 5.0  # the same for a camera while udev events are coming
    open_timeout_s: float = 10.0  # an open that hangs longer is given up on

    @classmethod
    def from_config(cls, cfg: CameraConfig) -> WatchSettings:
        reopen_max = getattr(cfg, "reopen_max_s", cls.reopen_max_s)
        return cls(reopen_max_s=float(reopen_max))


class Backoff:
    """Capped exponential delays between reopen attempts. Pure: the caller supplies `now`.

    Delays double from `first` up to `cap`. Frames flowing for `healthy_s` forgive the past,
    so a camera that fails once a day retries fast, and one that fails right after every
    open is retried ever more slowly.
    """

    def __init__(self, first: float, cap: float, healthy_s: float, factor: float = 2.0) -> None:
        if not 0 < first <= cap:
            raise ValueError("need 0 < first <= cap")
        self.first, self.cap, self.healthy_s, self.factor = first, cap, healthy_s, factor
        self.failures = 0  # since the last healthy period
        self._next = first
        self._ok_since: Optional[float] = None

    def failure(self, now: float) -> float:
        """A failed open or read at `now`: how long to wait before the next attempt."""
        if self._ok_since is not None and now - self._ok_since >= self.healthy_s:
            self.reset()
        self._ok_since = None
        delay = self._next
        self._next = min(self.cap, delay * self.factor)
        self.failures += 1
        return delay

    def success(self, now: float) -> None:
        """A frame arrived at `now`."""
        if self._ok_since is None:
            self._ok_since = now

    def reset(self) -> None:
        """Start again from `first` (the camera was plugged in again)."""
        self._next = self.first
        self.failures = 0

    @property
    def next_delay(self) -> float:
        return self._next


class _Call(Generic[T]):
    def __init__(self, func: Callable[[], T]) -> None:
        self.func = func
        self.done = False
        self.result: Optional[T] = None
        self.error: Optional[BaseException] = None


class _Worker:
    """A daemon thread that runs blocking driver calls one at a time for the supervisor.

    Retiring it hands it the source it opened: it closes that source after its current call
    returns (OpenCV captures must not be released while another thread reads them).
    """

    def __init__(self, cond: threading.Condition, name: str) -> None:
        self._cond = cond
        self._calls: list[_Call[Any]] = []
        self._retired = False
        self._owned: Optional[Source] = None
        self._exited = False  # its loop has ended: it closes nothing handed to it now
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, func: Callable[[], T]) -> _Call[T]:
        call: _Call[T] = _Call(func)
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()
        return call

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def retire(self, owned: Optional[Source]) -> None:
        """Stop after the current call; close `owned` (and any source a late open returns).

        A worker retired before (by stop()) may have exited already: `owned` is closed here
        then, as no call of its can be running."""
        with self._cond:
            self._retired = True
            exited = self._exited
            if owned is not None and not exited:
                self._owned = owned
            self._cond.notify_all()
        if exited and owned is not None:
            _close(owned)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._calls and not self._retired:
                    self._cond.wait()
                if not self._calls:
                    self._exited = True
                    owned = self._owned
                    break
                call = self._calls.pop(0)
            error: Optional[BaseException] = None
            try:
                result = call.func()
            except BaseException as exc:  # handed to the reader, which decides
                result, error = None, exc
            with self._cond:
                call.result, call.error, call.done = result, error, True
                if self._retired and self._owned is None and hasattr(result, "close"):
                    self._owned = result  # an open that finished after it was given up on
                self._cond.notify_all()
        if owned is not None:
            _close(owned)


def _camera_at(device: v4l2.V4l2Device) -> tuple[str, str]:
    """Which physical camera a node is: its port and serial. A camera replugged on its port
    has another node name and sysfs path, but the same port (ID_PATH; without udev's record,
    the USB interface the node hangs under)."""
    port = device.properties.get("ID_PATH") or os.path.dirname(os.path.dirname(device.sys_path))
    return port, device.properties.get("ID_SERIAL", "")


def _where(device: v4l2.V4l2Device) -> str:
    """A node for the log: what it is and which port it is on."""
    port = device.properties.get("ID_PATH")
    return device.describe() + (f" on {port}" if port else "")


def _close(source: Source) -> None:
    try:
        source.close()
    except Exception:
        log.debug("closing a camera given up on failed", exc_info=True)


class UdevWatch:
    """A pyudev MonitorObserver thread on video4linux; `on_event(action, device)` per event."""

    def __init__(self, context: Any, on_event: Callable[[str, v4l2.V4l2Device], None]) -> None:
        import pyudev

        self._on_event = on_event
        self._observer: Any = pyudev.MonitorObserver(
            v4l2.monitor(context), callback=self._event, name="wattgate-udev", daemon=True
        )
        self._observer.start()

    def _event(self, device: Any) -> None:
        try:
            self._on_event(str(device.action), v4l2.from_udev(device))
        except Exception:
            log.exception("udev event handling failed")

    def stop(self) -> None:
        """Stop the thread and give its netlink socket back now, not at the next cycle
        collection: a daemon whose camera is reloaded many times would pile sockets up.

        The socket is libudev's, closed by udev_monitor_unref() when pyudev's Monitor is
        freed (Monitor.__del__; a Monitor has no close(), and closing its fileno() under
        libudev would close whatever took that number next). The observer holds the
        Monitor, and sits in a reference cycle: its callback is this watch's method, and
        this watch belongs to the SupervisedSource whose method is `on_event`. Dropping the
        observer breaks the cycle, so the Monitor is freed as soon as its thread has ended:
        here, after the join, or when the thread returns if stop() runs on it (pyudev's
        MonitorObserver.stop() then only signals the thread, which cannot join itself)."""
        observer, self._observer = self._observer, None
        if observer is not None and observer.is_alive():
            observer.stop()


class SupervisedSource:
    """A Source that keeps `camera.source` open across losses; see the module docstring."""

    def __init__(
        self,
        cfg: CameraConfig,
        on_lost: Optional[Callable[[str], None]] = None,
        on_back: Optional[Callable[[], None]] = None,
        *,
        on_ended: Optional[Callable[[str], None]] = None,
        luma_rows: int = DEFAULT_LUMA_ROWS,
        settings: Optional[WatchSettings] = None,
        opener: Optional[Opener] = None,
        udev: Any = True,
    ) -> None:
        """`udev`: True for the system's (when usable), False for none, or a pyudev.Context.
        `opener` replaces the default CaptureSource/SyntheticSource (tests, other drivers)."""
        self.cfg = cfg
        self.spec = cfg.source.strip()
        self.shown = without_password(self.spec)  # what messages and the status name it by
        self.kind: SourceKind = source_kind(self.spec)  # a malformed udev: spec raises
        if self.kind == "synthetic" and self.spec.split(":", 1)[1] not in SCENES:
            raise SourceError(f"camera.source {self.spec!r}: unknown scene")
        self.identity = v4l2.parse_identity(self.spec) if self.kind == "v4l2" else None
        self.settings = settings or WatchSettings.from_config(cfg)
        self.on_lost = on_lost
        self.on_back = on_back
        self.on_ended = on_ended
        self.luma_rows = luma_rows
        self._opener = opener or self._default_opener
        self.description = f"{self.shown} (not open)"
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self.paced = self.kind in ("file", "synthetic") and cfg.realtime
        self.live = self.kind not in ("file", "synthetic")  # media time for files and scenes

        s = self.settings
        self._backoff = Backoff(s.reopen_min_s, s.reopen_max_s, s.healthy_s)
        self._cond = threading.Condition()
        self._state: State = "waiting"
        self._reason = "not opened yet"
        self._since = time.time()
        self._loss: Loss = "none"
        self._stopped = False
        self._wake = False  # udev says the camera is there: try now
        self._arrived = False  # udev says a matching camera came while one is open
        self._removed = False  # udev says the open camera is gone
        self._retry_at = 0.0  # monotonic time of the next open attempt
        self._retry_delay = 0.0  # the wait before that attempt
        self._inner: Optional[Source] = None
        self._attempted = threading.Event()  # the first open attempt has finished
        self._worker: Optional[_Worker] = None
        self._device: Optional[v4l2.V4l2Device] = None  # the camera located last
        self._opened_device: Optional[v4l2.V4l2Device] = None  # the camera opened last
        self._switching = ""  # why the open camera is being left for another, for the log
        self._twins: tuple[str, ...] = ()  # the cameras an ambiguous identity was warned of
        self._noted_no_udev = ""  # the camera picked without udev that was warned of
        self._noted_no_capture = ""  # the node that captures no video that was warned of
        self._target = ""
        self._resume_at = 0  # frame of a cut-short file to reopen at
        self._cut_mark: Optional[FileMark] = None  # that file as the source cut short had it
        # where and as what a file was cut short, and since when (monotonic) it is so
        self._cut: Optional[tuple[int, FileState, float]] = None
        self._delivered = 0
        self._opens = 0
        self._workers = 0
        self._newest: Optional[_Worker] = None  # the worker of the last open, for stop()
        self._last_frame = 0.0
        self._context: Any = None
        self._udev: Optional[UdevWatch] = None
        if self.kind == "v4l2" and udev is not False:
            self._start_udev(udev)

    # -- the Source protocol --------------------------------------------------------------

    def read(self) -> Optional[Frame]:
        """The next frame; blocks while the camera is lost; None once ended or stopped."""
        while True:
            with self._cond:
                if self._stopped or self._state == "ended":
                    return None
            if self._inner is None:
                self._open_when_due()
                self._attempted.set()
                continue
            frame = self._read_inner()
            if frame is not None:
                return frame

    def close(self) -> None:
        self.stop()

    def wait_first_attempt(self, timeout: float) -> bool:
        """Wait until the first open attempt has finished: opened, or found absent.

        The daemon says READY after this, so "ready" means the camera is open (its
        buffers, or a generated scene, already in memory) or known to be missing.
        """
        return self._attempted.wait(timeout)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop promptly: wake a blocked reader (read() returns None), stop the udev thread,
        and give the camera's worker up to `timeout` to finish its call and close the capture.

        Waiting for that worker matters at exit: a thread still inside OpenCV while the
        interpreter finalizes aborts the process. A worker stuck in a hung driver call is
        left behind after `timeout` (SIGTERM must not wait for it).
        """
        self._attempted.set()  # nobody waits for a first open that will not come
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
        if self._udev is not None:
            self._udev.stop()
        self._drop_inner()
        newest = self._newest
        if newest is not None:
            newest.retire(None)
            newest.join(timeout)

    def take_over_loss(self, previous: SupervisedSource) -> None:
        """Stand in for `previous`, stopped (a reload with new camera settings), before the
        first read: clients told by `previous` that the camera was lost wait for camera_back,
        so this source announces that loss back once frames come, not a second loss."""
        with previous._cond:
            loss = previous._loss  # final: a stopped source announces nothing more
        with self._cond:
            self._loss = max(self._loss, loss, key=LOSS_ORDER.index)

    def follow_luma_rows(self, rows: int) -> None:
        """The gate's rows changed (a reload): the source open now, and those opened later,
        decode for them (CaptureSource.follow_luma_rows)."""
        with self._cond:
            self.luma_rows = rows
            self._apply_luma_rows()

    def _apply_luma_rows(self) -> None:
        """Under _cond: the open source decodes for luma_rows (it only replaces an int or
        two), so a reload meanwhile cannot be undone by an open that read the rows before."""
        follow = getattr(self._inner, "follow_luma_rows", None)
        if follow is not None:
            follow(self.luma_rows)

    # -- what the daemon shows ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def opened(self) -> bool:
        """A camera, file or scene is open now (its first frame may not have come yet)."""
        return self._inner is not None

    def status(self) -> dict[str, Any]:
        """For the `status` reply: what is open, its state and, when not running, why."""
        with self._cond:
            out: dict[str, Any] = {
                "source": self.shown,
                "state": self._state,
                "since": round(self._since, 3),
                "description": self.description,
                "width": self.width,
                "height": self.height,
                "fps": self.fps,
                "frames": self._delivered,
                "reopens": max(0, self._opens - 1),
            }
            if self.identity is not None:
                out["identity"] = self.identity.describe()
            if self._target:
                out["device" if self.kind == "v4l2" else "target"] = without_password(self._target)
            if self._state != "running":
                out["reason"] = self._reason
            if self._state in ("lost", "waiting") and not self._stopped:
                out["failures"] = self._backoff.failures
                out["retry_in_s"] = round(max(0.0, self._retry_at - time.monotonic()), 3)
                out["retry_delay_s"] = round(self._retry_delay, 3)
            if self._udev is None and self.kind == "v4l2":
                out["hotplug"] = False
        return out

    # -- opening ----------------------------------------------------------------------------

    def _default_opener(self, target: str, start_frame: int) -> Source:
        if self.kind == "synthetic":
            name = self.spec.split(":", 1)[1]
            try:
                return SyntheticSource(name, self.cfg)
            except KeyError as exc:
                raise SourceError(f"camera.source {self.spec!r}: {exc.args[0]}") from None
        return CaptureSource(
            target,
            self.cfg,
            kind=self.kind,
            luma_rows=self.luma_rows,
            start_frame=start_frame,
            read_timeout_s=2 * self._stall_s() + 1.0,  # cleans up after a worker given up on
        )

    def _locate(self) -> tuple[Optional[str], str]:
        """What to open now, or (None, why not): a missing file or camera is no failure."""
        if self.kind == "file":
            if os.path.isfile(self.spec):
                return self.spec, ""
            return None, f"no such file: {self.spec}"
        if self.identity is None:
            return self.spec, ""  # a URL, FIFO, pipeline or scene: opening will tell
        if self.identity.kind == "path":
            path = self.identity.path
            if not os.path.exists(path):
                return None, f"no such device: {path}"
            devices = v4l2.list_devices(self._context)
            self._device = v4l2.resolve(self.identity, devices)
            if self._device is not None:
                why = self._no_capture(self._device, devices)
                if why:
                    return None, why
            return path, ""
        devices = v4l2.list_devices(self._context)
        found = v4l2.candidates(self.identity, devices)
        if not found:
            why = f"no camera matches {self.identity.describe()}"
            if self.identity.kind == "udev" and any(d.kernel for d in devices):
                why += " (udev has no database here: is systemd-udevd running?)"
            return None, why
        if self.identity.kind == "udev":
            self._warn_ambiguous(found)
        self._warn_no_udev(found[0])
        self._device = found[0]
        return found[0].devnode, ""

    def _no_capture(self, device: v4l2.V4l2Device, devices: list[v4l2.V4l2Device]) -> str:
        """Why the node `camera.source` names cannot give pictures ("" if it can, or may):
        it captures no video, as udev or the kernel says. A UVC camera's second node
        (/dev/video1, its by-id ...-video-index1 link) is its metadata node, a common
        mistake; it could only ever be "cannot be opened", retried for ever. The reason
        names the camera's capture node when there is one, and is warned of once."""
        basis = v4l2.no_capture_basis(device)
        if basis is None:
            return ""
        why = (f"{device.describe()} is not a capture node ({basis}); a UVC camera's "
               "second node carries metadata, not pictures")
        sibling = v4l2.capture_sibling(device, devices)
        if sibling is not None:
            by_id = [link for link in sibling.links if "/by-id/" in link]
            why += (f"; use {sibling.devnode}" + (f" or {by_id[0]}" if by_id else "")
                    + ", the capture node of the same camera")
        with self._cond:
            warned, self._noted_no_capture = self._noted_no_capture, device.devnode
            announced = self._loss != "none"  # else the loss's own warning says it
        if announced and warned != device.devnode:
            log.warning("camera.source %s: %s", self.spec, why)
        return why

    def _warn_no_udev(self, device: v4l2.V4l2Device) -> None:
        """Say once per camera picked that udev had no record of it, and why it was taken:
        "auto" then rests on what the kernel says (v4l2.KernelNode), not on udev's rules."""
        note = v4l2.udev_database_note(device)
        if note and device.devnode != self._noted_no_udev:
            self._noted_no_udev = device.devnode
            log.warning("camera.source %s: %s", self.spec, note)

    def _warn_ambiguous(self, found: list[v4l2.V4l2Device]) -> None:
        """Say once per set of cameras that `udev:` matched several: which one is used, and
        how to name one for sure. A camera with no port-stable choice would otherwise be
        swapped for its twin silently."""
        twins = tuple(d.devnode for d in found)
        if len(twins) < 2 or twins == self._twins:
            return
        self._twins = twins
        log.warning(
            "camera.source %s matches %d cameras: %s; using %s (the first port); name one by "
            "its /dev/v4l/by-path/ link to choose", self.spec, len(found),
            ", ".join(d.describe() for d in found), found[0].devnode,
        )

    def _open_when_due(self) -> None:
        with self._cond:
            while not self._stopped and not self._wake:
                left = self._retry_at - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._wake = False
            self._removed = False
            if self._stopped:
                return
        target, why = self._locate()
        device = self._device if self.kind == "v4l2" else None
        if target is None:
            poll = self.settings.poll_udev_s if self._udev else self.settings.poll_s
            self._unavailable(why, poll, failure=False)
            return
        self._workers += 1
        worker = self._newest = _Worker(self._cond, f"wattgate-camera-{self._workers}")
        start = self._resume_from(target)
        call = worker.submit(lambda: self._opener(target, start))
        if not self._wait(call, self.settings.open_timeout_s):
            worker.retire(None)
            if not self._stopped:
                self._unavailable(f"opening {target} took over {self.settings.open_timeout_s:g} s")
            return
        if call.error is not None or call.result is None:
            worker.retire(None)
            self._unavailable(str(call.error) if call.error else f"cannot open {target}")
            return
        inner: Source = call.result
        with self._cond:
            stopped = self._stopped
            if not stopped:
                self._inner, self._worker, self._target = inner, worker, target
                self._apply_luma_rows()  # a reload may have changed them while it opened
                self._opens += 1
                self.description = inner.description
                self.width, self.height, self.fps = inner.width, inner.height, inner.fps
                self._last_frame = time.monotonic()
        if stopped:  # stop() came after the open finished: it found nothing open to close
            worker.retire(inner)
            return
        log.log(logging.INFO if self._opens == 1 else logging.DEBUG, "camera open: %s",
                inner.description)
        self._note_other_camera(device)

    def _note_other_camera(self, device: Optional[v4l2.V4l2Device]) -> None:
        """Warn when the camera just opened is another one than the camera opened before
        (another port or serial, not the same camera back under a new node name): twins
        that share a serial, or `auto` with two cameras, would otherwise have the daemon
        gate and infer on another scene with nothing in the log to say so."""
        previous, self._opened_device = self._opened_device, device
        why, self._switching = self._switching, ""
        if previous is None or device is None or _camera_at(previous) == _camera_at(device):
            return
        log.warning("camera.source %s: opened %s instead of %s, which was open before%s",
                    self.spec, _where(device), _where(previous), why)

    def _resume_from(self, target: str) -> int:
        """The frame to open `target` at: where a file cut short stopped, unless the file
        there is no longer that recording. Another file may have been renamed over it
        (a recorder's rotation: another inode), or a new recording written over it in
        place (a recorder's O_TRUNC keeps the inode). The source that was cut short cannot
        always tell: a rewrite that has written nothing yet (cv2.VideoWriter buffers its
        first frames) looks like a cut, and a rename may come after the cut. Either way
        the new recording was opened at the old one's frame number, its first frames
        never played. It is played from its first frame instead."""
        mark, start = self._cut_mark, self._resume_at
        if not start or mark is None:
            return start
        how = no_longer(target, mark.file_id, mark)
        if not how:
            return start
        log.info("source %s was %s; playing the new file from frame 0", self.spec, how)
        with self._cond:
            self._resume_at, self._cut_mark = 0, None
        return 0

    def _wait(self, call: _Call[Any], timeout: float) -> bool:
        """Wait for a worker's call; False on timeout, stop, or the open camera unplugged."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not call.done and not self._stopped and not self._removed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return call.done

    # -- reading ----------------------------------------------------------------------------

    def _stall_s(self) -> float:
        """`camera.stall_s`, but never shorter than two frame periods of a slow camera."""
        return max(self.cfg.stall_s, 2.0 / self.fps if self.fps > 0 else 0.0)

    def _read_inner(self) -> Optional[Frame]:
        inner, worker = self._inner, self._worker
        if inner is None or worker is None:  # stop() dropped them since read() looked
            return None
        if self._arrived and self._switch_to_preferred():
            return None
        call = worker.submit(inner.read)
        stall = self._stall_s()
        if not self._wait(call, stall):
            if self._stopped:
                return None
            if self._removed:
                self._lost("camera removed")
            else:
                self._lost(f"stalled: no frame for {stall:g} s")
            return None
        if call.error is not None:
            self._lost(f"read error: {call.error}")
            return None
        frame: Optional[Frame] = call.result
        if frame is None:
            self._ended_or_lost(inner)
            return None
        return self._deliver(frame, inner)

    def _deliver(self, frame: Frame, inner: Source) -> Frame:
        now = time.monotonic()
        with self._cond:
            back = self._loss != "none" and not self._stopped  # else the next source's to say
            if back:
                self._loss = "none"
            if self._state != "running":
                self._set_state("running", "")
            self._backoff.success(now)
            self._last_frame = now
            self._resume_at = 0
            if self.kind != "file":  # a device's index goes on across reopens
                frame = replace(frame, index=self._delivered)
            self._delivered += 1
            self._follow_size(inner)
        if back:
            log.info("camera back: %s", self.description, extra=event(MessageId.CAMERA_FOUND))
            if self.on_back is not None:
                self.on_back()
        return frame

    def _follow_size(self, inner: Source) -> None:
        """Follow a stream whose pictures changed size mid-way (an MJPEG camera or file
        switched resolution): the open source tracks its size and description itself
        (CaptureSource), and what was copied from it at open no longer says what comes."""
        if (inner.width, inner.height) != (self.width, self.height):
            self.description, self.width, self.height = (
                inner.description, inner.width, inner.height)

    def _ended_or_lost(self, inner: Source) -> None:
        reason = getattr(inner, "end_reason", None) or "read failed"
        if reason == "ended":
            self._end("")
            return
        if reason == "replaced":  # log rotation: a new file renamed over the one played
            self._play_from_start(logging.INFO, "was replaced; playing the new file")
            return
        if reason == "cut short":
            position = int(getattr(inner, "position", 0))
            state: Optional[FileState] = getattr(inner, "cut_state", None)
            if self._unchanged_since_cut(position, state):
                count = int(getattr(inner, "frame_count", 0))
                why = f"stops at frame {position} of the {count} its header counts"
                if self.cfg.loop:  # its end, as the driver loops a whole file at its end
                    level = logging.DEBUG if self._state == "running" else logging.INFO
                    self._play_from_start(level, f"{why}; playing it again from frame 0")
                else:
                    self._end(f": it {why}")
                return
            self._resume_at = position
            self._cut_mark = getattr(inner, "mark", None)
            self._lost(f"file cut short at frame {position}")
            return
        if self.kind == "v4l2" and self._target and not os.path.exists(self._target):
            self._lost("camera removed")
            return
        self._lost(reason)

    def _switch_to_preferred(self) -> bool:
        """After udev said a matching camera came while one is open: if the identity now
        means that camera, and not the open one (the twin on the first port is back after
        the daemon fell back to the other), close the open one to open it at once, with no
        loss reported. Else the daemon would stay on whichever camera was there at the
        last loss, whatever the port, for good. A camera that is gone meanwhile is a loss,
        handled by the read."""
        with self._cond:
            self._arrived = False
            current, removed = self._opened_device, self._removed
        if current is None or removed or self.identity is None:
            return False
        found = v4l2.candidates(self.identity, v4l2.list_devices(self._context))
        present = [d.sys_path for d in found]
        if not found or current.sys_path not in present or found[0].sys_path == current.sys_path:
            return False
        self._switching = f"; it appeared and comes first for {self.identity.describe()}"
        self._drop_inner()
        with self._cond:
            self._retry_at = 0.0
        return True

    def _play_from_start(self, level: int, why: str) -> None:
        """Open the file again at once, from its first frame, with no loss reported: a new
        file renamed over the one played, or a looping file whose header overstates its
        length at its end (the driver loops only a file that ends where its header says).
        `level`: a file that loops so every few seconds is logged at DEBUG after the first
        time, as the driver's own loop is not logged at all."""
        self._drop_inner()
        with self._cond:
            self._retry_at, self._resume_at = 0.0, 0
        log.log(level, "source %s %s", self.shown, why)

    def _unchanged_since_cut(self, position: int, state: Optional[FileState]) -> bool:
        """Whether a file cut short at ``position``, now as ``state``, has been so for
        `camera.stall_s`: long enough that no recorder is still writing it, as a camera
        that long without a frame is taken for stalled. A recorder writes in bursts (a
        muxer flushes its buffer, not each frame), so one unchanged reopen proves nothing."""
        now = time.monotonic()
        if state is None:
            self._cut = None
            return False
        if self._cut is None or self._cut[:2] != (position, state):
            self._cut = (position, state, now)
            return False
        return now - self._cut[2] >= self._stall_s()

    def _end(self, why: str) -> None:
        """The file was played to its end: read() returns None from now on.

        Also for a file cut short that has stayed as it was at the cut (the same file, size
        and mtime, no frame past the cut) for `camera.stall_s`: nothing is writing it, so
        its header just overstates its length, and reopening it would fail the same way for
        ever.

        `on_ended` is told, unless an end was told already (taken over on a reload): no
        frame comes from now on, and clients told camera_lost would wait for a camera_back
        that will not come. The end stays announced, so a reload that opens a camera whose
        frames come says camera_back."""
        self._drop_inner()
        with self._cond:
            self._set_state("ended", "end of file")
            told = self._loss != "closed" and not self._stopped  # a stopped source: nothing
            if told:
                self._loss = "closed"
        log.info("source %s ended%s", self.shown, why)
        if self.on_ended is not None and told:
            self.on_ended(f"end of file{why}")

    # -- losing and waiting -------------------------------------------------------------------

    def _drop_inner(self) -> None:
        with self._cond:
            inner, worker = self._inner, self._worker
            self._inner = self._worker = None
        if worker is not None:
            worker.retire(inner)
        elif inner is not None:
            inner.close()

    def _lost(self, reason: str) -> None:
        """The open camera stopped giving frames: close it and schedule a reopen."""
        self._drop_inner()
        self._unavailable(reason)

    def _unavailable(self, reason: str, wait: Optional[float] = None, failure: bool = True) -> None:
        reason = without_password(reason)  # an open's error may quote the URL
        now = time.monotonic()
        with self._cond:
            if self._stopped:
                return
            delay = self._backoff.failure(now) if failure else (wait or self.settings.poll_s)
            self._retry_at, self._retry_delay = now + delay, delay
            state: State = "lost" if self._opens else "waiting"
            changed = reason != self._reason or state != self._state
            self._set_state(state, reason)
            announce, self._loss = self._loss != "open", "open"
        if announce:
            log.warning("camera %s unavailable: %s", self.shown, reason,
                        extra=event(MessageId.CAMERA_LOST, reason=reason))
            if self.on_lost is not None:
                self.on_lost(reason)
        elif changed:
            log.info("camera %s: %s (retry in %.1f s)", self.shown, reason, delay)

    def _set_state(self, state: State, reason: str) -> None:
        if state != self._state:
            self._since = time.time()
        self._state, self._reason = state, reason

    # -- udev -------------------------------------------------------------------------------

    def _start_udev(self, udev: Any) -> None:
        context = udev if udev is not True else v4l2.udev_context()
        if context is None:
            return
        self._context = context
        try:
            self._udev = UdevWatch(context, self._on_udev)
        except Exception as exc:  # no netlink (containers): fall back to polling
            log.warning("no udev monitor (%s); looking for the camera every %.1f s",
                        exc, self.settings.poll_s)

    def _on_udev(self, action: str, device: v4l2.V4l2Device) -> None:
        """On the udev thread: note the event and wake the reader; it does the work.

        A matching camera added while one is still open is remembered too: a camera that
        drops off the bus and comes back while the reader is busy with a frame has its
        remove and its add handled before the reader notices the loss (and udevd may even
        send the new node's add before the old node's remove). The reopen after that loss
        then happens at once instead of after the backoff, and the reader looks whether
        the camera that came is the one the identity means first (`_switch_to_preferred`).
        A "change" of the open camera is no arrival."""
        with self._cond:
            current = self._device
            is_open = self._inner is not None
            if action == "remove" and is_open and (
                self._target in (device.devnode, *device.links)
                or (current is not None and device.sys_path == current.sys_path)
            ):
                self._removed = True
                self._cond.notify_all()
            elif (action == "add" or (action == "change" and not is_open)) and (
                self.identity is not None and v4l2.matches(self.identity, device)
            ):
                self._backoff.reset()
                self._wake = True
                self._arrived = is_open
                self._cond.notify_all()
