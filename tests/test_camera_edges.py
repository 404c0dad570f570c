"""Camera supervision on a board: hotplug races, twin cameras, and stopping mid-open.

The udev tests run a child under umockdev-wrapper (see tests/test_v4l2_udev.py): real uevents
reach wattgate's real pyudev monitor thread. No real /dev/video device exists here, so the
supervisor opens a real video file in its place; a stand-in wraps it to fail its reads once
the test unplugged it, as a V4L2 capture does (ENODEV) on a real board.

Nothing here asserts how long anything took: tests wait, with generous deadlines, for
something to happen.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_camera_watch import wait_for, write_video
from tests.test_v4l2_udev import PRELUDE, run_child
from wattgate.config import CameraConfig
from wattgate.daemon.camera_watch import SupervisedSource
from wattgate.drivers.camera import CaptureSource, SourceError

# Helpers every udev child below uses after PRELUDE.
HOTPLUG = r"""
import logging

class Node:
    # stand-in for a V4L2 capture (none exists here): a real video file, whose reads fail
    # once the test unplugged it, as a real capture's do with ENODEV
    def __init__(self, target):
        self.inner = CaptureSource(VIDEO, CameraConfig(source=VIDEO, loop=True, realtime=False))
        self.description, self.width, self.height = target, self.inner.width, self.inner.height
        self.fps, self.paced, self.live = self.inner.fps, False, True
        self.end_reason = None
        self.gone = threading.Event()

    def read(self):
        if self.gone.is_set():
            self.end_reason = "read failed"
            return None
        return self.inner.read()

    def close(self):
        self.inner.close()


nodes = []
dead_on_arrival = threading.Event()  # set: every node opened from now on fails its reads


def opener(target, start):
    node = Node(target)
    if dead_on_arrival.is_set():
        node.gone.set()
    with lock:
        opened.append(target)
        nodes.append(node)
        lock.notify_all()
    return node


class Observed(SupervisedSource):
    # notes each udev event after the supervisor handled it, so the test knows it arrived
    def _on_udev(self, action, device):
        super()._on_udev(action, device)
        note("udev", action, device.devnode)


# Only udev can bring the camera back in time: retries and polls are minutes apart.
SLOW = WatchSettings(reopen_min_s=300.0, reopen_max_s=600.0, poll_s=600.0, poll_udev_s=600.0)


def supervise(spec, settings=SLOW):
    return Observed(CameraConfig(source=spec), on_lost=lambda r: note("lost", r),
                    on_back=lambda: note("back"), settings=settings, opener=opener)


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


warnings = Warnings()
logging.getLogger("wattgate").addHandler(warnings)


def seen(action, devnode):
    return lambda: ["udev", action, devnode] in events


bed = UMockdev.Testbed.new()
"""

REPLUG = PRELUDE + HOTPLUG + r"""
order = sys.argv[3]
a0, text = camera(2, "video0", "Acme_Cam_A")
assert bed.add_from_string(text)
source = supervise("udev:ID_SERIAL=Acme_Cam_A")
out = {"first": [source.read() is not None for _ in range(3)]}

# The capture thread is busy (inference) while the camera drops off the bus and comes back:
# both uevents are handled before it reads again.
nodes[-1].gone.set()
if order == "in order":  # the same port, the same node name: the testbed keeps the device
    bed.uevent(a0, "remove")
    bed.uevent(a0, "add")
    back_as = "/dev/video0"
else:  # udevd handles the two devices in parallel: the new node's add comes first
    a5, text5 = camera(5, "video5", "Acme_Cam_A")
    assert bed.add_from_string(text5)
    bed.uevent(a5, "add")
    bed.uevent(a0, "remove")
    bed.remove_device(a0)
    back_as = "/dev/video5"
out["events_seen"] = wait(seen("remove", "/dev/video0")) and wait(seen("add", back_as))

thread = threading.Thread(target=read_frames, args=(source, 3), daemon=True)
thread.start()
out["back"] = wait(lambda: len(frames) >= 3)
out["events"] = [e for e in events if e[0] != "udev"]
out["opened"] = opened
out["back_as"] = back_as
source.stop()
thread.join(10)
print(json.dumps(out))
"""


@pytest.mark.parametrize("order", ["in order", "add first"])
def test_a_camera_replugged_while_the_reader_was_busy_is_reopened_at_once(
    tmp_path: Path, order: str
) -> None:
    """Unplugged and plugged in again (a USB glitch, a hub's brown-out) while the capture
    thread was busy with a frame: the remove and the add were both handled while the old
    capture was still open, and the add was dropped because a camera was open. The camera
    then waited for the backoff (up to camera.reopen_max_s) although it was back."""
    out: dict[str, Any] = run_child(tmp_path, REPLUG, order)
    assert out["first"] == [True, True, True] and out["events_seen"]
    assert out["back"], f"not reopened: {out}"
    assert [e[0] for e in out["events"]] == ["lost", "back"]
    assert out["opened"] == ["/dev/video0", out["back_as"]]


TWINS = PRELUDE + HOTPLUG + r"""
# Two cameras of one model that share a serial, on USB ports 2 and 3: the one on port 3 came
# up first (video0). Another pair, on ports 4 and 5, came up in port order.
for port, node, serial in [(3, "video0", "Twin_A"), (2, "video2", "Twin_A"),
                           (4, "video4", "Twin_B"), (5, "video6", "Twin_B")]:
    assert bed.add_from_string(camera(port, node, serial)[1])
devices = v4l2.list_devices()
out = {spec: v4l2.resolve(v4l2.parse_identity(spec), devices).devnode
       for spec in ("udev:ID_SERIAL=Twin_A", "udev:ID_SERIAL=Twin_B")}

# The supervisor says so, once, however often it opens the camera again.
fast = WatchSettings(reopen_min_s=0.05, reopen_max_s=0.1, poll_s=0.05, poll_udev_s=0.05)
source = supervise("udev:ID_SERIAL=Twin_A", fast)
out["read"] = source.read() is not None
dead_on_arrival.set()
nodes[-1].gone.set()
thread = threading.Thread(target=source.read, daemon=True)
thread.start()
out["reopened"] = wait(lambda: len(opened) >= 4)
source.stop()
thread.join(10)
out["opened"] = sorted(set(opened))
out["warnings"] = [m for m in warnings.messages if "/dev/video0" in m and "/dev/video2" in m]
print(json.dumps(out))
"""


def test_twin_cameras_with_one_serial_pick_the_same_port_whatever_came_up_first(
    tmp_path: Path,
) -> None:
    """Two cameras of one model often share a serial (or report none, and udev makes one
    from the model). udev:ID_SERIAL= then matched both and took the lower /dev/videoN,
    which is whichever camera the kernel enumerated first: after a reboot or a replug the
    daemon could watch the other camera, and nothing said that the identity was
    ambiguous. The choice now follows the USB port (ID_PATH), and a warning names both."""
    out: dict[str, Any] = run_child(tmp_path, TWINS)
    assert out["udev:ID_SERIAL=Twin_A"] == "/dev/video2"  # port 2, though it came up second
    assert out["udev:ID_SERIAL=Twin_B"] == "/dev/video4"  # port 4
    assert out["read"] and out["reopened"]
    assert out["opened"] == ["/dev/video2"]
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "Twin_A" in out["warnings"][0] and "by-path" in out["warnings"][0]


# -- stopping ------------------------------------------------------------------------------------


def open_fds(path: Path) -> int:
    """How many of this process's file descriptors are open on `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor)
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


class StoppedWhileOpening(SupervisedSource):
    """A supervisor stopped, from another thread (a reload, SIGTERM), just as its camera's
    open finished and before it took the capture: the window is too narrow to hit by
    chance, so it is opened wide here, after the real wait for the open."""

    def _wait(self, call: Any, timeout: float) -> bool:
        done = super()._wait(call, timeout)
        if done and not self.opened:
            stopper = threading.Thread(target=self.stop)
            stopper.start()
            stopper.join()
        return done


def test_a_capture_opened_as_the_supervisor_stops_is_closed(tmp_path: Path) -> None:
    """The open finished, stop() ran (nothing was open yet to close, and the worker was
    retired with nothing to close), then the supervisor took the capture as its own: it
    was never closed. On a board the camera stayed held by a stopped supervisor, so the
    one a reload started could not open it (EBUSY)."""
    video = write_video(tmp_path / "camera.avi", frames=10)
    source = StoppedWhileOpening(CameraConfig(source=str(video), realtime=False), udev=False)
    assert source.read() is None  # stopped
    wait_for(lambda: open_fds(video) == 0, timeout=10.0, what="the capture to be closed")
    assert not source.opened


class StoppedBeforeTheRead(SupervisedSource):
    """stop() from another thread between read()'s look at the stopped flag and its read
    of the open capture: too narrow a window to hit by chance, so it is opened here."""

    def _read_inner(self) -> Any:
        if self.opened:
            stopper = threading.Thread(target=self.stop)
            stopper.start()
            stopper.join()
        return super()._read_inner()


def test_a_supervisor_stopped_as_it_reads_returns_no_frame(tmp_path: Path) -> None:
    """The capture stop() had just dropped was asserted to be there: the capture thread
    died with an AssertionError in the middle of a clean shutdown."""
    video = write_video(tmp_path / "camera.avi", frames=10)
    source = StoppedBeforeTheRead(CameraConfig(source=str(video), realtime=False), udev=False)
    assert source.read() is None  # stopped, not an AssertionError


def test_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    """A recording cut to nothing while it played (a recorder's O_TRUNC, a full disk) is
    waited for as any file that does not open; the reason said only "cannot be opened"."""
    empty = tmp_path / "camera.avi"
    empty.write_bytes(b"")
    with pytest.raises(SourceError) as info:
        CaptureSource(str(empty), CameraConfig(source=str(empty)))
    assert str(info.value) == f"camera.source {str(empty)!r}: the file is empty"
