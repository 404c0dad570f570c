"""`wattgate probe` lists the cameras camera.source = "auto" would consider, where udev has no
database too (containers, systems without systemd-udevd).

The umockdev child runs the real `wattgate probe` command on the testbed of
tests/test_camera_no_udev.py: a Rockchip board whose hardware decoder (an M2M device), UVC
camera (capture and metadata node) and a second camera missing from /dev are listed by
libudev uninitialized, with an umockdev ioctl handler answering VIDIOC_QUERYCAP as the
kernel's drivers do (no driver can answer it here). The in-process test lays out a fake sysfs
tree with real character device nodes that no driver serves, as for a container without
libudev.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_camera_no_udev import NO_UDEV_BED, kernel_video_nodes
from tests.test_v4l2_udev import run_child
from wattgate.drivers.inventory import Camera, format_inventory, probe, survey_cameras
from wattgate.drivers.sysfs import Sysfs

CHILD = NO_UDEV_BED + r"""
import contextlib, io
from wattgate.cli import main

def run(*argv):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = main(["probe", *argv])
    return code, text.getvalue()

code, text = run()
json_code, json_text = run("--json")
out = {"code": [code, json_code], "text": text, "json": json.loads(json_text)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_child(tmp_path_factory.mktemp("probe-no-udev"), CHILD)


def test_probe_lists_only_capture_nodes_without_a_udev_database(child: dict[str, Any]) -> None:
    """The decoder (video0) and the metadata node (video2) are no cameras, by the kernel's
    VIDIOC_QUERYCAP; video3 is in sysfs only. The JSON keeps its fields and adds which node
    auto picks, on what grounds it is a camera, and that udev has no database."""
    assert child["code"] == [0, 0]
    data = child["json"]
    [camera] = data["cameras"]
    assert camera["devnode"] == "/dev/video1"
    assert camera["name"] == "Acme Cam"
    assert camera["sys_path"].endswith("/1-1:1.0/video4linux/video1")
    assert camera["bus"] is None
    assert camera["capabilities"] == ":capture:"
    assert camera["auto"] is True
    assert camera["basis"] == "VIDIOC_QUERYCAP device_caps 0x04200001"
    assert data["udev_database"] is False
    assert "camera" in data["keys"]


def test_probe_text_marks_the_auto_camera_and_says_udev_has_no_database(
    child: dict[str, Any],
) -> None:
    text = child["text"]
    cameras = text[text.index("\nCameras:"):]
    assert cameras.startswith("\nCameras: 1  [camera.source")
    assert "udev has no database here (is systemd-udevd running?)" in cameras
    assert "VIDIOC_QUERYCAP" in cameras and "sysfs index 0" in cameras
    assert ("  /dev/video1: Acme Cam  <- auto (capture by VIDIOC_QUERYCAP device_caps "
            "0x04200001)") in cameras
    for other in ("/dev/video0", "/dev/video2", "/dev/video3", "/dev/video4"):
        assert other not in cameras


def test_without_libudev_probe_lists_index_0_nodes_that_are_in_dev(tmp_path: Path) -> None:
    """No libudev at all (the context cannot list): the nodes come from sysfs, as "auto"
    finds them. The nodes are real character devices no driver serves, so VIDIOC_QUERYCAP is
    unanswered (open() fails) and the sysfs index decides; video0 is not in this /dev."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    kernel_video_nodes(sys_root, dev_root, [
        ("1-1", "video0", 0, False), ("1-2", "video1", 0, True), ("1-2", "video2", 1, True)])

    class NoUdev:
        """A pyudev context that cannot list, as in a sandbox without libudev's access."""

        def list_devices(self, **kwargs: object) -> list[object]:
            raise OSError("no udev here")

    [camera] = survey_cameras(NoUdev(), Sysfs(sys_root), str(dev_root)).cameras
    assert camera.devnode == str(dev_root / "video1")
    assert camera.name == "Cam 1-2" and camera.capabilities == ""
    assert camera.auto and camera.basis == "sysfs index 0 (VIDIOC_QUERYCAP unanswered)"


def test_udev_cameras_read_as_before(tmp_path: Path) -> None:
    """With udev's database nothing about udev is said, and the first camera is auto's."""
    first = Camera("/dev/video0", "HD USB Camera", "/sys/x/video0", "usb", ":capture:", auto=True)
    second = Camera("/dev/video2", "Other", "/sys/y/video2", "usb", ":capture:")
    inv = probe(tmp_path, cameras=[first, second], udev_database=True)
    text = format_inventory(inv)
    assert "  /dev/video0: HD USB Camera  <- auto\n  /dev/video2: Other\n" in text
    assert "udev has no database" not in text
    assert first.basis == "udev ID_V4L_CAPABILITIES"
