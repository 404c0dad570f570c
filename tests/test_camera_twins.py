"""Two identical cameras (one serial) named by `udev:ID_SERIAL=`: the one on the first USB
port is meant, across replugs. Runs in a umockdev testbed (tests/test_v4l2_udev.py): its
/dev nodes are not V4L2 devices, so the supervisor opens a real video file in their place,
and which node it was asked to open is what is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_camera_edges import HOTPLUG
from tests.test_v4l2_udev import PRELUDE, WRAPPER, run_child

pytestmark = pytest.mark.skipif(
    WRAPPER is None, reason="umockdev-wrapper is not installed (Debian package umockdev)"
)

REPLUGGED_TWIN = PRELUDE + HOTPLUG + r"""
a2, text = camera(2, "video0", "Twin_A"); assert bed.add_from_string(text)
a3, text = camera(3, "video2", "Twin_A"); assert bed.add_from_string(text)
fast = WatchSettings(reopen_min_s=0.2, reopen_max_s=0.5, poll_s=0.2, poll_udev_s=0.2)
source = supervise("udev:ID_SERIAL=Twin_A", fast)
thread = threading.Thread(target=read_frames, args=(source, None, 0.01), daemon=True)
thread.start()
out = {"first": wait(lambda: len(frames) >= 3)}
warnings.messages.clear()

# the port-2 camera drops off the bus: the twin on port 3 is all there is
nodes[-1].gone.set()
bed.uevent(a2, "remove"); bed.remove_device(a2)
out["fell_back"] = wait(lambda: len(opened) >= 2)
n = len(frames); wait(lambda: len(frames) >= n + 3)
out["fell_back_warnings"] = [m for m in warnings.messages if "instead of" in m]
warnings.messages.clear()

# it comes back on its port, under a new node name
b2, text = camera(2, "video4", "Twin_A"); assert bed.add_from_string(text)
bed.uevent(b2, "add")
out["switched"] = wait(lambda: len(opened) >= 3)
n = len(frames); out["flowing"] = wait(lambda: len(frames) >= n + 3)
out["device"] = source.status()["device"]
out["opened"] = opened
out["events"] = [e[0] for e in events if e[0] != "udev"]
out["switch_warnings"] = [m for m in warnings.messages if "instead of" in m]
source.stop(); thread.join(10)
print(json.dumps(out))
"""


def test_the_twin_on_the_first_port_is_switched_back_to_when_it_returns(
    tmp_path: Path,
) -> None:
    """The camera on the first port dropped off the bus, and the reopen took its twin on
    the next port with no word. When it came back, its udev add only woke a reader that
    had a camera open, so the daemon watched the twin (another scene) for good, until a
    restart flipped it back. Now each change of camera is warned of, naming both, and
    the first port's camera is switched back to at once, with no loss reported."""
    out: dict[str, Any] = run_child(tmp_path, REPLUGGED_TWIN)
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["first"] and out["fell_back"] and out["switched"] and out["flowing"], out
    assert out["opened"] == ["/dev/video0", "/dev/video2", "/dev/video4"]
    assert out["device"] == "/dev/video4"
    assert out["events"] == ["lost", "back"]  # the unplug; the switch back is no loss
    assert len(out["fell_back_warnings"]) == 1, out["fell_back_warnings"]
    assert "usb-0:3:1.0" in out["fell_back_warnings"][0]
    assert len(out["switch_warnings"]) == 1, out["switch_warnings"]
    assert "usb-0:2:1.0" in out["switch_warnings"][0]
