"""Camera discovery and hotplug against a umockdev testbed.

A python child runs under umockdev-wrapper (libumockdev-preload redirects /sys, /dev and the
udev netlink socket into a testbed) and drives the testbed through umockdev's GObject
bindings: it adds UVC cameras written in the umockdev-record format, emits add/remove
uevents, and watches what wattgate's discovery and the camera supervisor make of them. The
real pyudev monitor thread receives the uevents. The testbed's /dev nodes are not V4L2
devices, so the supervisor opens a real video file in their place (its `opener`); which
node it was asked to open is what the test checks.

Needs the Debian packages umockdev, gir1.2-umockdev-1.0 and python3-gi; the child borrows the
system's `gi` module, since PyGObject is not a wheel the venv can install without a compiler
and the GObject headers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WRAPPER = shutil.which("umockdev-wrapper")
SYSTEM_SITE = "/usr/lib/python3/dist-packages"

pytestmark = pytest.mark.skipif(
    WRAPPER is None, reason="umockdev-wrapper is not installed (Debian package umockdev)"
)

# What every child starts with: the gi bindings, wattgate, and `camera()`, a UVC camera's
# node in umockdev-record format. Other tests (test_camera_edges.py) run their own bodies after it.
PRELUDE = r"""
import json, os, sys, threading, time
sys.path.append(sys.argv[2])
try:
    import gi
    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev
except (ImportError, ValueError) as exc:
    print(json.dumps({"skip": f"umockdev GObject bindings unavailable: {exc}"}))
    sys.exit(0)

from wattgate.config import CameraConfig
from wattgate.daemon.camera_watch import SupervisedSource, WatchSettings
from wattgate.drivers import v4l2
from wattgate.drivers.camera import CaptureSource, SourceError, open_source

VIDEO = sys.argv[1]
USB = "/devices/pci0000:00/0000:00:14.0/usb1"


def camera(port, node, serial, capture=True):
    # a UVC camera's video4linux node in umockdev-record format
    by_id = f"v4l/by-id/usb-{serial}-video-index{0 if capture else 1}"
    by_path = f"v4l/by-path/pci-0000:00:14.0-usb-0:{port}:1.0-video-index{0 if capture else 1}"
    caps = ":capture:" if capture else ":"
    path = f"{USB}/1-{port}/1-{port}:1.0/video4linux/{node}"
    text = f'''P: {path}
N: {node}
S: {by_id}
S: {by_path}
E: DEVNAME=/dev/{node}
E: SUBSYSTEM=video4linux
E: MAJOR=81
E: MINOR={node[5:]}
E: ID_BUS=usb
E: ID_SERIAL={serial}
E: ID_V4L_CAPABILITIES={caps}
E: ID_V4L_PRODUCT=Acme Cam
E: ID_PATH=pci-0000:00:14.0-usb-0:{port}:1.0
E: DEVLINKS=/dev/{by_id} /dev/{by_path}
A: name=Acme Cam\\n
A: index={0 if capture else 1}\\n
'''
    return "/sys" + path, text


# what the supervisor under test reports, and a wait for it
events, opened = [], []
lock = threading.Condition()


def note(*event):
    with lock:
        events.append(list(event))
        lock.notify_all()


def wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    with lock:
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            lock.wait(left)
    return True


frames = []


def read_frames(source, most=None, pause=0.0):
    # the capture thread: each frame's index into `frames`, until the source ends or
    # `most` have come
    while most is None or len(frames) < most:
        frame = source.read()
        if frame is None:
            return
        with lock:
            frames.append(frame.index)
            lock.notify_all()
        time.sleep(pause)
"""

CHILD = PRELUDE + r"""
out = {}
bed = UMockdev.Testbed.new()
a0, text = camera(2, "video0", "Acme_Cam_A")
assert bed.add_from_string(text)
a1, text = camera(2, "video1", "Acme_Cam_A", capture=False)
assert bed.add_from_string(text)
b2, text = camera(3, "video2", "Acme_Cam_B")
assert bed.add_from_string(text)

# -- discovery ---------------------------------------------------------------------------------
devices = v4l2.list_devices()
out["listed"] = [[d.devnode, d.capture] for d in devices]
def which(spec):
    found = v4l2.resolve(v4l2.parse_identity(spec), devices)
    return found.devnode if found else None
out["resolved"] = {
    spec: which(spec)
    for spec in [
        "auto",
        "udev:ID_SERIAL=Acme_Cam_B",
        "udev:ID_SERIAL=Acme_Cam_A",
        "udev:ID_V4L_PRODUCT=Acme*,ID_PATH=*usb-0:3:1.0",
        "/dev/v4l/by-id/usb-Acme_Cam_A-video-index0",
        "/dev/v4l/by-path/pci-0000:00:14.0-usb-0:3:1.0-video-index0",
        "/dev/video1",
        "1",
        "udev:ID_SERIAL=Nobody",
    ]
}
try:  # the real opener resolves the identity, then finds no V4L2 device behind the node
    open_source(CameraConfig(source="udev:ID_SERIAL=Acme_Cam_B"))
except SourceError as exc:
    out["open_error"] = str(exc)

# -- hotplug -----------------------------------------------------------------------------------
file_cfg = CameraConfig(source=VIDEO, loop=True, realtime=False)
def opener(target, start):
    opened.append(target)
    return CaptureSource(VIDEO, file_cfg, start_frame=start)

# Only udev can bring the camera back in time: retries and polls are minutes apart.
slow = WatchSettings(reopen_min_s=300.0, reopen_max_s=600.0, poll_s=600.0, poll_udev_s=600.0)
source = SupervisedSource(
    CameraConfig(source="udev:ID_SERIAL=Acme_Cam_A"),
    on_lost=lambda reason: note("lost", reason),
    on_back=lambda: note("back"),
    settings=slow, opener=opener,
)
thread = threading.Thread(target=read_frames, args=(source, None, 0.01), daemon=True)
thread.start()
out["first_frames"] = wait(lambda: len(frames) >= 5)
out["running"] = source.state
out["status_running"] = source.status()

bed.uevent(a0, "remove")
bed.remove_device(a0)
bed.uevent(a1, "remove")
bed.remove_device(a1)
out["lost"] = wait(lambda: any(e[0] == "lost" for e in events))
out["state_lost"] = source.state
out["status_lost"] = source.status()

# another camera arriving is not ours: it is looked at and left alone
c4, text = camera(4, "video3", "Acme_Cam_C")
assert bed.add_from_string(text)
bed.uevent(c4, "add")
# camera A comes back on another port, under another node name
a5, text = camera(5, "video5", "Acme_Cam_A")
assert bed.add_from_string(text)
bed.uevent(a5, "add")
out["back"] = wait(lambda: any(e[0] == "back" for e in events))
count = len(frames)
out["frames_after"] = wait(lambda: len(frames) >= count + 5)
out["events"] = [list(e) for e in events]
out["opened"] = list(opened)
out["state_back"] = source.state
out["indices_increase"] = frames == sorted(set(frames))
source.stop()
thread.join(10)
out["stopped"] = not thread.is_alive()

# -- a camera that is not there at start -------------------------------------------------------
events.clear()
opened.clear()
late = SupervisedSource(
    CameraConfig(source="/dev/v4l/by-id/usb-Acme_Cam_D-video-index0"),
    on_lost=lambda reason: note("lost", reason),
    on_back=lambda: note("back"),
    settings=slow, opener=opener,
)
frames.clear()
thread = threading.Thread(target=read_frames, args=(late, None, 0.01), daemon=True)
thread.start()
out["late_waiting"] = wait(lambda: bool(events)) and late.state
d6, text = camera(6, "video6", "Acme_Cam_D")
assert bed.add_from_string(text)
bed.uevent(d6, "add")
out["late_back"] = wait(lambda: len(frames) >= 3)
out["late_events"] = events
out["late_opened"] = opened
late.stop()
thread.join(10)
print(json.dumps(out))
"""


def run_child(tmp_path: Path, body: str = CHILD, *args: str) -> dict[str, Any]:
    """Run `body` (PRELUDE and more) under umockdev-wrapper; the JSON it printed last.
    Its argv[1] is a small MJPG video to open in place of a camera node; `args` follow
    the system's site directory (argv[2])."""
    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(30):
        writer.write(np.full((120, 160, 3), 4 * i, np.uint8))
    writer.release()
    assert WRAPPER is not None
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [WRAPPER, sys.executable, "-c", body, str(video), SYSTEM_SITE, *args],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_child(tmp_path_factory.mktemp("umockdev"))


def test_discovery_lists_nodes_in_order_and_matches_identities(child: dict[str, Any]) -> None:
    assert child["listed"] == [
        ["/dev/video0", True], ["/dev/video1", False], ["/dev/video2", True]
    ]
    assert child["resolved"] == {
        "auto": "/dev/video0",
        "udev:ID_SERIAL=Acme_Cam_B": "/dev/video2",
        "udev:ID_SERIAL=Acme_Cam_A": "/dev/video0",  # not its metadata node video1
        "udev:ID_V4L_PRODUCT=Acme*,ID_PATH=*usb-0:3:1.0": "/dev/video2",
        "/dev/v4l/by-id/usb-Acme_Cam_A-video-index0": "/dev/video0",
        "/dev/v4l/by-path/pci-0000:00:14.0-usb-0:3:1.0-video-index0": "/dev/video2",
        "/dev/video1": "/dev/video1",  # named explicitly, so taken as is
        "1": "/dev/video1",
        "udev:ID_SERIAL=Nobody": None,
    }
    assert "/dev/video2" in child["open_error"] and "cannot be opened" in child["open_error"]


def test_a_removed_camera_is_lost_and_reopened_when_it_comes_back(
    child: dict[str, Any],
) -> None:
    assert child["first_frames"] and child["running"] == "running"
    assert child["status_running"]["device"] == "/dev/video0"
    assert child["status_running"]["identity"] == "udev:ID_SERIAL=Acme_Cam_A"
    assert child["lost"] and child["state_lost"] == "lost"
    assert child["status_lost"]["reason"] == "camera removed"
    # back through the udev event alone (retries were minutes away), under its new node
    assert child["back"] and child["frames_after"] and child["state_back"] == "running"
    assert child["events"] == [["lost", "camera removed"], ["back"]]
    assert child["opened"] == ["/dev/video0", "/dev/video5"]  # camera C was left alone
    assert child["indices_increase"] and child["stopped"]


def test_a_camera_missing_at_start_is_picked_up_when_plugged_in(child: dict[str, Any]) -> None:
    assert child["late_waiting"] == "waiting"
    assert child["late_back"]
    assert child["late_events"] == [
        ["lost", "no such device: /dev/v4l/by-id/usb-Acme_Cam_D-video-index0"], ["back"]
    ]
    assert child["late_opened"] == ["/dev/v4l/by-id/usb-Acme_Cam_D-video-index0"]
