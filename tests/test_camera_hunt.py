"""Camera supervision on a board: hotplug races, twin cameras, and stopping mid-open.

The udev tests run a child under umockdev-wrapper (see tests/test_v4l2_udev.py): real uevents
reach wattgate's real pyudev monitor thread. No real /dev/video device exists here, so the
supervisor opens a real video file in its place; a stand-in wraps it to fail its reads once
the test unplugged it, as a V4L2 capture does (ENODEV) on a real board.

Nothing here asserts how long anything took: tests wait, with generous deadlines, for
something to happen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_v4l2_udev import PRELUDE, run_child

# Helpers every udev child below uses after PRELUDE.
HOTPLUG = r"""
from wattgate.drivers.camera import CaptureSource

VIDEO = sys.argv[1]
events, opened = [], []
lock = threading.Condition()


def note(*event):
    with lock:
        events.append(list(event))
        lock.notify_all()


def wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    with lock:
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            lock.wait(left)
    return True


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


def opener(target, start):
    node = Node(target)
    with lock:
        opened.append(target)
        nodes.append(node)
    return node


class Observed(SupervisedSource):
    # notes each udev event after the supervisor handled it, so the test knows it arrived
    def _on_udev(self, action, device):
        super()._on_udev(action, device)
        note("udev", action, device.devnode)


# Only udev can bring the camera back in time: retries and polls are minutes apart.
SLOW = WatchSettings(reopen_min_s=300.0, reopen_max_s=600.0, poll_s=600.0, poll_udev_s=600.0)


def supervise(spec):
    return Observed(CameraConfig(source=spec), on_lost=lambda r: note("lost", r),
                    on_back=lambda: note("back"), settings=SLOW, opener=opener)


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

frames = []
def reader():
    while len(frames) < 3:
        frame = source.read()
        if frame is None:
            return
        with lock:
            frames.append(frame.index)
            lock.notify_all()
thread = threading.Thread(target=reader, daemon=True)
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
