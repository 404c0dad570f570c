"""A capture rate slower than the watchdog's stall limit is not a stall.

The watchdog's pings stop when capture makes no progress for the stall limit (20 s, or two
thirds of WatchdogSec= when shorter): a capture thread stuck in a driver. A profile's
capture_fps drops frames before the gate without counting them as grabbed, and a paced
source (a file, a scene) at a low camera.fps waits between frames: either slower than the
limit (0.02 fps against 20 s) stopped the pings, and systemd restarted the daemon every
minute. Here WATCHDOG_USEC=2 s makes the limit 1.33 s, so 0.4 fps (2.5 s a frame) is past it,
and by more than the daemon's tick (a second): every frame period has a tick that sees it.

A live camera triggered by hardware (a line that stands still) sends nothing for as long as
camera.stall_s allows: that silence is not a stall either.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from bench.common import NotifyListener
from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize

StartDaemon = Callable[..., DaemonProcess]
WATCHDOG = {"WATCHDOG_USEC": "2000000"}  # pings every 1 s, stall limit 1.33 s
FRAMES = 2  # frame periods watched


@pytest.mark.parametrize("slow", ["camera_fps", "capture_fps"])
def test_a_capture_rate_below_the_stall_limit_keeps_the_watchdog_fed(
    start_daemon: StartDaemon, notify: NotifyListener, tmp_path: Path, slow: str
) -> None:
    sections: dict[str, Any] = {"camera": {"source": "synthetic:empty", "width": 320,
                                           "height": 240, "fps": 0.4}}
    if slow == "capture_fps":  # a camera at its usual rate, a profile that keeps 0.4 fps
        root = materialize("rk3588", tmp_path / "board")
        sections = {
            "camera": {"source": "synthetic:empty", "width": 320, "height": 240},
            "power": {"sysfs_root": str(root), "profile": "slow"},
            "profiles": {"slow": {"include": "balanced", "idle": {"capture_fps": 0.4},
                                  "active": {"capture_fps": 0.4}}},
        }
    daemon = start_daemon(env={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG}, **sections)
    notify.wait_for("READY=1")
    pings = [line for _, line in notify.collect(FRAMES * 2.5) if line.startswith("WATCHDOG=1")]
    assert pings, "the watchdog's pings stopped"
    notify.wait_for("WATCHDOG=1", timeout=10)  # and go on
    assert daemon.stop() == 0
    assert "stalled" not in daemon.log_path.read_text()


def test_a_live_camera_quiet_within_camera_stall_s_keeps_the_watchdog_fed(
    start_daemon: StartDaemon, notify: NotifyListener, tmp_path: Path
) -> None:
    """A FIFO fed JPEGs, as a vendor SDK or a triggered camera feeds one: a burst for the
    probe, then one frame every 2.5 s, inside camera.stall_s = 20."""
    fifo = tmp_path / "camera.mjpeg"
    os.mkfifo(fifo)
    picture = np.zeros((240, 320, 3), np.uint8)
    cv2.putText(picture, "x", (100, 100), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    stop = threading.Event()

    def feed() -> None:
        with open(fifo, "wb", buffering=0) as camera:
            camera.write(jpeg * 150)  # enough for FFmpeg's probe of the stream
            while not stop.wait(2.5):
                camera.write(jpeg)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        daemon = start_daemon(
            env={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG},
            camera={"source": str(fifo), "width": 320, "height": 240, "fps": 0.4,
                    "stall_s": 20.0},
            gate={"enabled": False})
        notify.wait_for("READY=1")
        notify.collect(FRAMES * 2.5)
        notify.wait_for("WATCHDOG=1", timeout=10)  # still fed
        assert daemon.stop() == 0
    finally:
        stop.set()
    assert "stalled" not in daemon.log_path.read_text()
