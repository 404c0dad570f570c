"""camera.source naming a UVC camera's metadata node (its second node: /dev/video1, or the
by-id ...-video-index1 link), a common mistake. Runs in a umockdev testbed
(tests/test_v4l2_udev.py) whose camera has a capture node and a metadata node, as udev
describes a real UVC camera's (ID_V4L_CAPABILITIES=":capture:" and ":").
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

METADATA_NODE = PRELUDE + HOTPLUG + r"""
a0, text = camera(2, "video0", "Acme_Cam_A"); assert bed.add_from_string(text)
a1, text = camera(2, "video1", "Acme_Cam_A", capture=False); assert bed.add_from_string(text)
out = {}
for spec in ("/dev/video1", "/dev/v4l/by-id/usb-Acme_Cam_A-video-index1"):
    warnings.messages.clear()
    fast = WatchSettings(reopen_min_s=0.05, reopen_max_s=0.1, poll_s=0.05, poll_udev_s=0.05)
    s = SupervisedSource(CameraConfig(source=spec), settings=fast)
    th = threading.Thread(target=s.read, daemon=True); th.start()
    time.sleep(1.0)  # many attempts, one warning
    st = s.status()
    out[spec] = {"state": st["state"], "reason": st["reason"],
                 "warnings": [m for m in warnings.messages if "/dev/video1" in m]}
    s.stop(); th.join(5)
print(json.dumps(out))
"""


def test_a_metadata_node_is_named_as_such_with_the_capture_node_to_use(
    tmp_path: Path,
) -> None:
    """The daemon retried such a node for ever, and `status` said only "cannot be opened":
    nothing pointed at the cause. udev knows the node captures no video; the reason says
    so, names the same camera's capture node and its by-id link, and is warned of once."""
    out: dict[str, Any] = run_child(tmp_path, METADATA_NODE)
    if "skip" in out:
        pytest.skip(out["skip"])
    for spec in ("/dev/video1", "/dev/v4l/by-id/usb-Acme_Cam_A-video-index1"):
        seen = out[spec]
        assert seen["state"] == "waiting", seen
        assert "not a capture node" in seen["reason"] and "metadata" in seen["reason"], seen
        assert "use /dev/video0 or /dev/v4l/by-id/usb-Acme_Cam_A-video-index0" in seen["reason"]
        assert len(seen["warnings"]) == 1, seen["warnings"]
        assert seen["reason"] in seen["warnings"][0]
