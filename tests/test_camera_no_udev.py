"""camera.source = "auto" where udev has no database: containers and initramfs-style systems
without systemd-udevd, where /sys lists the cameras but none of udev's rules' properties
(ID_V4L_CAPABILITIES, ID_SERIAL...) exist, so "auto" found nothing.

Under umockdev (see tests/test_v4l2_udev.py) the testbed's devices have only their kernel
uevent properties, so libudev reports them uninitialized, as without udevd. VIDIOC_QUERYCAP
cannot reach a real driver here: an umockdev ioctl handler answers it for each node with
what the kernel's drivers answer (uvcvideo's capture and metadata nodes, a Hantro decoder).
The in-process test lays out a fake sysfs tree of a container with real character device
nodes (mknod) that no driver serves, so open() fails as for a node the daemon may not use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_v4l2_udev import PRELUDE, run_child
from wattgate.drivers import v4l2
from wattgate.drivers.sysfs import Sysfs

# The testbed of a board without udevd, and the VIDIOC_QUERYCAP answers of its nodes;
# tests/test_probe_cameras.py runs `wattgate probe` on it.
NO_UDEV_BED = PRELUDE + r"""
import logging, struct
from wattgate.drivers.camera import resolve_device

warnings = []

class Collect(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())

logging.getLogger("wattgate").addHandler(Collect())

# A Rockchip board without udevd: the VPU's decoder is video0 (a memory-to-memory device,
# index 0 of its platform device), a UVC camera is video1 (capture, index 0) and video2
# (its metadata node, index 1), and a second camera's nodes video3/video4 are in sysfs only:
# the container was given no /dev node for them.
RK_VPU = "/devices/platform/fdb50000.video-codec"
UVC = "/devices/platform/fc800000.usb/usb1/1-1/1-1:1.0"
NODES = [  # (sysfs parent, node, kernel name, index, in /dev)
    (RK_VPU, "video0", "rockchip,rk3568-vpu-dec", 0, True),
    (UVC, "video1", "Acme Cam", 0, True),
    (UVC, "video2", "Acme Cam", 1, True),
    ("/devices/platform/fc880000.usb/usb3/3-1/3-1:1.0", "video3", "Other Cam", 0, False),
    ("/devices/platform/fc880000.usb/usb3/3-1/3-1:1.0", "video4", "Other Cam", 1, False),
]
# what the drivers answer to VIDIOC_QUERYCAP (include/uapi/linux/videodev2.h bits):
# uvcvideo's device caps are VIDEO_CAPTURE|STREAMING for the capture node and
# META_CAPTURE|STREAMING for the metadata node (uvc_driver.c, uvc_register_video_device),
# its `capabilities` the union of both; hantro's are VIDEO_M2M_MPLANE|STREAMING. The core
# adds EXT_PIX_FORMAT (v4l2-ioctl.c, v4l_querycap).
STREAMING, EXT, DEVICE_CAPS = 0x04000000, 0x00200000, 0x80000000
DEVICE = {"video0": 0x4000, "video1": 0x1, "video2": 0x00800000}
ALL = {"video0": 0x4000, "video1": 0x00800001, "video2": 0x00800001}
asked = []

def querycap(handler, client):
    node = os.path.basename(client.get_devnode())
    if client.get_request() != v4l2.VIDIOC_QUERYCAP:
        client.complete(-1, 25)  # ENOTTY
        return True
    asked.append(node)
    device = DEVICE[node] | STREAMING | EXT
    caps = ALL[node] | STREAMING | EXT | DEVICE_CAPS
    driver = b"hantro-vpu" if node == "video0" else b"uvcvideo"
    answer = struct.pack("=16s32s32sIII12x", driver, b"", b"", 0x60000, caps, device)
    client.get_arg().resolve(0, len(answer)).update(0, answer)
    client.complete(0, 0)
    return True

bed = UMockdev.Testbed.new()
handler = UMockdev.IoctlBase()
handler.connect("handle-ioctl", querycap)
for parent, node, name, index, in_dev in NODES:
    minor = node[5:]
    lines = [f"P: {parent}/video4linux/{node}", f"N: {node}" if in_dev else None,
             f"E: DEVNAME=/dev/{node}", "E: SUBSYSTEM=video4linux", "E: MAJOR=81",
             f"E: MINOR={minor}", f"A: name={name}\\n", f"A: index={index}\\n",
             f"A: dev=81:{minor}\\n"]
    assert bed.add_from_string("\n".join(line for line in lines if line) + "\n")
    if in_dev:
        bed.attach_ioctl(f"/dev/{node}", handler)
"""

CHILD = NO_UDEV_BED + r"""
import pyudev
listed = pyudev.Context().list_devices(subsystem="video4linux")
out = {"initialized": [d.is_initialized for d in listed]}
devices = v4l2.list_devices()
out["listed"] = [[d.devnode, d.capture, d.capabilities, d.name] for d in devices]
found = v4l2.resolve(v4l2.parse_identity("auto"), devices)
out["auto"] = found and found.devnode
out["asked"] = sorted(set(asked))
try:
    out["resolve_device"] = resolve_device("auto")
except SourceError as exc:
    out["resolve_device"] = str(exc)
out["resolve_warnings"] = list(warnings)

# the supervisor: the first opens fail, so it looks for the camera again each time
warnings.clear()
fails = [1, 2, 3]
def opener(target, start):
    with lock:
        opened.append(target)
    if fails:
        fails.pop()
        raise SourceError(f"{target} busy")
    return CaptureSource(VIDEO, CameraConfig(source=VIDEO, loop=True, realtime=False))

quick = WatchSettings(reopen_min_s=0.01, reopen_max_s=0.05, poll_s=0.05, poll_udev_s=0.05)
source = SupervisedSource(CameraConfig(source="auto"), settings=quick, opener=opener)
thread = threading.Thread(target=read_frames, args=(source, 3), daemon=True)
thread.start()
thread.join(30)
out["frames"] = len(frames)
out["opened"] = list(opened)
out["status"] = source.status()
source.stop()
out["supervisor_warnings"] = [w for w in warnings if "udev" in w]

# udev: properties cannot match without udev's database, and the reason says why
frames.clear()
named = SupervisedSource(CameraConfig(source="udev:ID_SERIAL=Acme_Cam"), settings=quick,
                         on_lost=lambda reason: note("lost", reason))
thread = threading.Thread(target=read_frames, args=(named, 1), daemon=True)
thread.start()
out["udev_lost"] = wait(lambda: bool(events)) and events[0][1]
named.stop()
thread.join(10)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_child(tmp_path_factory.mktemp("no-udev"), CHILD)


def test_auto_asks_the_kernel_which_node_captures_without_a_udev_database(
    child: dict[str, Any],
) -> None:
    assert child["initialized"] == [False] * 5  # no udev database behind these devices
    assert child["listed"] == [
        ["/dev/video0", False, ":", "rockchip,rk3568-vpu-dec"],  # a decoder: index 0, no camera
        ["/dev/video1", True, ":capture:", "Acme Cam"],
        ["/dev/video2", False, ":", "Acme Cam"],  # uvcvideo's metadata node
        ["/dev/video3", False, "", "Other Cam"],  # in sysfs, but not in this /dev
        ["/dev/video4", False, "", "Other Cam"],
    ]
    assert child["auto"] == "/dev/video1"
    assert child["asked"] == ["video0", "video1", "video2"]  # no node, no question
    assert child["resolve_device"] == "/dev/video1"
    [warning] = child["resolve_warnings"]
    assert "udev has no database entry for /dev/video1" in warning
    assert "Acme Cam" in warning and "VIDIOC_QUERYCAP" in warning


def test_the_supervisor_opens_that_camera_and_says_so_once(child: dict[str, Any]) -> None:
    assert child["frames"] == 3
    assert child["opened"] == ["/dev/video1"] * 4  # three failed opens, then frames
    assert child["status"]["device"] == "/dev/video1"
    [warning] = child["supervisor_warnings"]  # once, not once per look
    assert "udev has no database entry for /dev/video1" in warning
    assert "device_caps 0x04200001" in warning


def test_udev_properties_that_cannot_match_say_why(child: dict[str, Any]) -> None:
    assert child["udev_lost"] == (
        "no camera matches udev:ID_SERIAL=Acme_Cam "
        "(udev has no database here: is systemd-udevd running?)"
    )


VideoNode = tuple[str, str, int, bool]  # USB port, node name, sysfs index, in /dev


def kernel_video_nodes(sys_root: Path, dev_root: Path, nodes: list[VideoNode]) -> None:
    """UVC nodes as the kernel alone shows them: /sys/class/video4linux links to each
    node's directory under its USB interface (name, index, dev), and for those in /dev a
    real character device that no driver serves (minors from 240 on, which no real video
    node has on this machine, so no real camera can answer)."""
    dev_root.mkdir()
    for minor, (port, node, index, in_dev) in enumerate(nodes, 240):
        usb = f"devices/pci0000:00/0000:00:14.0/usb1/{port}/{port}:1.0"
        device = sys_root / usb / "video4linux" / node
        device.mkdir(parents=True)
        (device / "name").write_text(f"Cam {port}\n")
        (device / "index").write_text(f"{index}\n")
        (device / "dev").write_text(f"81:{minor}\n")
        link = sys_root / "class/video4linux" / node
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(device, link.parent))
        if in_dev:
            try:
                os.mknod(dev_root / node, 0o600 | 0o020000, os.makedev(81, minor))
            except PermissionError:
                pytest.skip("mknod needs CAP_MKNOD")


def test_without_libudev_sysfs_lists_the_nodes_and_index_0_stands_for_capture(
    tmp_path: Path,
) -> None:
    """A container whose /sys shows the host's two UVC cameras (capture and metadata node
    each) but whose /dev holds only the second camera's nodes. The nodes are real character
    devices no driver serves here, so VIDIOC_QUERYCAP cannot be asked (open() fails, as for
    a node the daemon's user may not open): the node's index decides, and a node missing
    from /dev is no candidate."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    kernel_video_nodes(sys_root, dev_root, [
        ("1-1", "video0", 0, False), ("1-1", "video1", 1, False),
        ("1-2", "video2", 0, True), ("1-2", "video3", 1, True)])
    devices = v4l2.kernel_devices(Sysfs(sys_root), str(dev_root))
    assert [(Path(d.devnode).name, d.capture, d.name) for d in devices] == [
        ("video0", False, "Cam 1-1"), ("video1", False, "Cam 1-1"),
        ("video2", True, "Cam 1-2"), ("video3", False, "Cam 1-2"),
    ]
    assert devices[2].sys_path.endswith("usb1/1-2/1-2:1.0/video4linux/video2")
    picked = v4l2.resolve(v4l2.Identity("auto"), devices)
    assert picked is not None and picked.devnode == str(dev_root / "video2")
    note = v4l2.udev_database_note(picked)
    assert note is not None and "sysfs index 0 (VIDIOC_QUERYCAP unanswered)" in note
    # a udev: identity accepts a node whose capabilities are unknown, as before
    assert v4l2.capture_capable(devices[3])
