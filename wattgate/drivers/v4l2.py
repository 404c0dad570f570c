"""V4L2 cameras as udev sees them: capture nodes, and which one a configured identity means.

Mechanism only: no threads, no timers. The supervisor (wattgate/daemon/camera_watch.py) owns
the udev monitor thread and asks `matches` about each add/remove event.

An identity is what `camera.source` says, resolved again every time the camera comes back,
because the node name is not stable: a re-plugged USB camera may return as /dev/video2.

* ``auto``: the first node whose ID_V4L_CAPABILITIES has ``capture`` (a UVC camera also has a
  metadata node with the same serial; it lacks ``capture``). Where udev has no database (a
  container, an initramfs-style system without systemd-udevd), udev's properties are missing
  and the kernel is asked instead: see `kernel_node`.
* a path: ``/dev/video0``, ``0`` (= /dev/video0), or a udev symlink such as
  ``/dev/v4l/by-id/usb-...-video-index0`` or ``/dev/v4l/by-path/...``. A symlink is matched
  against the device's DEVLINKS, so it still names the camera while the link is absent.
* ``udev:KEY=VALUE[,KEY=VALUE...]``: udev properties, e.g. ``udev:ID_SERIAL=Foo_Cam_1234``;
  values may use shell wildcards (``udev:ID_V4L_PRODUCT=HD USB*``). Only capture nodes match
  (or nodes whose capabilities udev did not record). When several cameras match, the one on
  the first port (ID_PATH) is meant: see `candidates`.
"""

from __future__ import annotations

import fcntl
import fnmatch
import os
import platform
import re
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from wattgate.drivers.sysfs import Sysfs

SUBSYSTEM = "video4linux"
CLASS_DIR = "class/video4linux"  # relative to the sysfs root
DEV_ROOT = "/dev"
UDEV_PREFIX = "udev:"
AUTO = "auto"

IdentityKind = Literal["auto", "path", "udev"]

# include/uapi/linux/videodev2.h: struct v4l2_capability (driver[16], card[32], bus_info[32],
# version, capabilities, device_caps, reserved[3]) and the capability bits used here
_CAPABILITY = struct.Struct("=16s32s32sIII12x")
# _IOR('V', 0, struct v4l2_capability): _IOC_READ is 2 at bit 30 in the asm-generic layout
# (include/uapi/asm-generic/ioctl.h: ARM, AArch64, x86, RISC-V), at bit 29 where the
# direction has three bits (arch/{mips,powerpc,sparc,alpha}/include/uapi/asm/ioctl.h)
_IOC_READ = 2 << (29 if platform.machine().startswith(("mips", "ppc", "powerpc", "sparc",
                                                        "alpha")) else 30)
VIDIOC_QUERYCAP = _IOC_READ | (_CAPABILITY.size << 16) | (ord("V") << 8) | 0
# _IOC_WRITE: 1 at bit 30 in the asm-generic layout, 4 at bit 29 in the three-bit one
_IOC_WRITE = (4 << 29) if _IOC_READ == 2 << 29 else (1 << 30)
# struct v4l2_format: __u32 type, then a 200-byte union aligned as a pointer (its struct
# v4l2_window member holds two), so it begins at 8 and the struct is 208 bytes on 64-bit,
# at 4 and 204 bytes on 32-bit. Its members read here: struct v4l2_pix_format (width,
# height, pixelformat, field, bytesperline, sizeimage, then six more __u32) and the packed
# struct v4l2_pix_format_mplane (width, height, pixelformat, field, colorspace, then
# plane_fmt[8] of {sizeimage, bytesperline, __u16 reserved[6]}, then __u8 num_planes).
_FORMAT_UNION_AT = struct.calcsize("@IP") - struct.calcsize("@P")
_FORMAT_SIZE = _FORMAT_UNION_AT + 200
_PIX_FORMAT = struct.Struct("=6I")  # width, height, pixelformat, field, bytesperline, sizeimage
_PIX_MPLANE = struct.Struct("=5I")  # width, height, pixelformat, field, colorspace
_PLANE_FORMAT = struct.Struct("=II12x")  # sizeimage, bytesperline
_NUM_PLANES_AT = _PIX_MPLANE.size + 8 * _PLANE_FORMAT.size
# _IOWR('V', 4, struct v4l2_format)
VIDIOC_G_FMT = _IOC_READ | _IOC_WRITE | (_FORMAT_SIZE << 16) | (ord("V") << 8) | 4
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE = 9
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_OUTPUT = 0x00000002
V4L2_CAP_VIDEO_OVERLAY = 0x00000004
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_VIDEO_OUTPUT_MPLANE = 0x00002000
V4L2_CAP_TUNER = 0x00010000
V4L2_CAP_AUDIO = 0x00020000
V4L2_CAP_RADIO = 0x00040000
V4L2_CAP_DEVICE_CAPS = 0x80000000
_CAPTURE = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE

# How udev's v4l_id (systemd, src/udev/v4l_id/v4l_id.c) spells capabilities in
# ID_V4L_CAPABILITIES, so a node udev never saw reads as one it did: a metadata node
# (V4L2_CAP_META_CAPTURE only) and a memory-to-memory codec (V4L2_CAP_VIDEO_M2M*) are no
# ``capture``.
_V4L_ID_NAMES = (
    ("capture", _CAPTURE),
    ("video_output", V4L2_CAP_VIDEO_OUTPUT | V4L2_CAP_VIDEO_OUTPUT_MPLANE),
    ("video_overlay", V4L2_CAP_VIDEO_OVERLAY),
    ("audio", V4L2_CAP_AUDIO),
    ("tuner", V4L2_CAP_TUNER),
    ("radio", V4L2_CAP_RADIO),
)


@dataclass(frozen=True)
class KernelNode:
    """What the kernel itself says of a video4linux node that udev has no record of.

    From /sys/class/video4linux/videoN (drivers/media/v4l2-core/v4l2-dev.c: `name` is the
    driver's name for the node, for uvcvideo the camera's product string; `index` numbers
    the nodes of one parent device in registration order; `dev` is major:minor) and, when
    the node can be opened, VIDIOC_QUERYCAP's device_caps.
    """

    name: str
    index: Optional[int]
    device_caps: Optional[int]  # None: the node could not be asked (absent, denied)
    present: bool  # the node exists in /dev, as the character device `dev` names

    @property
    def capture(self) -> bool:
        """The node captures video: its device_caps say so or, unasked, it is the first
        node of its device. uvcvideo registers a camera's capture node and then its
        metadata node (drivers/media/usb/uvc/uvc_driver.c, uvc_register_terms: first
        uvc_register_video, then uvc_meta_register), so the capture node has index 0."""
        if self.device_caps is not None:
            return bool(self.device_caps & _CAPTURE)
        return self.present and self.index == 0

    def basis(self) -> str:
        """Why `capture` says what it says, for the log."""
        if self.device_caps is not None:
            return f"VIDIOC_QUERYCAP device_caps {self.device_caps:#010x}"
        if not self.present:
            return "no device node"
        return f"sysfs index {self.index} (VIDIOC_QUERYCAP unanswered)"


@dataclass(frozen=True)
class V4l2Device:
    """One video4linux node with the udev properties the matching needs."""

    devnode: str
    sys_path: str
    properties: Mapping[str, str] = field(default_factory=dict)
    kernel: Optional[KernelNode] = None  # set when udev has no database entry for the node

    @property
    def capabilities(self) -> str:
        """ID_V4L_CAPABILITIES, or for a node udev has no record of the same made from
        VIDIOC_QUERYCAP ("" when neither is known)."""
        caps = self.properties.get("ID_V4L_CAPABILITIES", "")
        if caps or self.kernel is None or self.kernel.device_caps is None:
            return caps
        return capability_names(self.kernel.device_caps)

    @property
    def capture(self) -> bool:
        """udev says this node captures video (ID_V4L_CAPABILITIES contains capture), or
        without udev's record, the kernel does (KernelNode.capture)."""
        if self.kernel is not None and "ID_V4L_CAPABILITIES" not in self.properties:
            return self.kernel.capture
        return ":capture:" in self.capabilities

    @property
    def links(self) -> tuple[str, ...]:
        """The node's udev symlinks (/dev/v4l/by-id/..., /dev/v4l/by-path/...)."""
        return tuple(self.properties.get("DEVLINKS", "").split())

    @property
    def name(self) -> str:
        kernel_name = self.kernel.name if self.kernel is not None else ""
        return (self.properties.get("ID_V4L_PRODUCT") or kernel_name
                or os.path.basename(self.devnode))

    def describe(self) -> str:
        serial = self.properties.get("ID_SERIAL")
        return f"{self.devnode} ({self.name}{', ' + serial if serial else ''})"


@dataclass(frozen=True)
class Identity:
    """Which camera `camera.source` means; see the module docstring."""

    kind: IdentityKind
    path: str = ""
    match: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        if self.kind == "auto":
            return "the first V4L2 capture device"
        if self.kind == "path":
            return self.path
        return UDEV_PREFIX + ",".join(f"{k}={v}" for k, v in self.match)


def parse_identity(spec: str) -> Optional[Identity]:
    """The identity `spec` names, or None when it is no V4L2 device (a file, a URL...).

    A malformed ``udev:`` spec raises ValueError naming what is wrong.
    """
    spec = spec.strip()
    if spec == AUTO:
        return Identity("auto")
    if spec.startswith(UDEV_PREFIX):
        pairs = []
        for part in spec[len(UDEV_PREFIX):].split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"{spec!r}: expected udev:KEY=VALUE[,KEY=VALUE...]")
            pairs.append((key.strip(), value.strip()))
        return Identity("udev", match=tuple(pairs))
    if spec.isascii() and spec.isdigit():  # int() refuses '²', which isdigit() takes
        return Identity("path", path=f"/dev/video{int(spec)}")
    if spec.startswith("/dev/"):
        return Identity("path", path=spec)
    return None


def capability_names(caps: int) -> str:
    """V4L2 capability bits as udev's v4l_id writes them: ``:capture:`` for a camera.

    `caps` is what VIDIOC_QUERYCAP gives as device_caps (the node's own; `capabilities` is
    the whole device's: a UVC camera's metadata node says VIDEO_CAPTURE there too)."""
    return ":" + "".join(f"{name}:" for name, bits in _V4L_ID_NAMES if caps & bits)


def capture_capable(device: V4l2Device) -> bool:
    """A capture node, or one whose capabilities udev did not record (old udev, containers)."""
    return device.capture or not device.capabilities


def matches(identity: Identity, device: V4l2Device) -> bool:
    """Whether `device` is the camera `identity` names (no I/O except a symlink lookup)."""
    if identity.kind == "auto":
        return device.capture
    if identity.kind == "udev":
        props = device.properties
        return capture_capable(device) and all(
            key in props and fnmatch.fnmatchcase(props[key], pattern)
            for key, pattern in identity.match
        )
    path = identity.path
    if path in (device.devnode, *device.links):
        return True
    try:  # a symlink udev made but did not list, or a hand-made one
        return os.path.realpath(path) == device.devnode and os.path.exists(path)
    except OSError:
        return False


def candidates(identity: Identity, devices: Iterable[V4l2Device]) -> list[V4l2Device]:
    """Every listed device the identity matches, the one `resolve` takes first.

    ``udev:`` properties may match several cameras (two of one model share a serial, or
    have none and udev makes one from the model): those are ordered by the port they are
    plugged into (ID_PATH), which stays put, and not by node name, which goes to whichever
    camera the kernel enumerated first at boot or replug. Others keep the listing's order.
    """
    found = [d for d in devices if matches(identity, d)]
    if identity.kind == "udev":
        found.sort(key=_port_order)
    return found


def resolve(identity: Identity, devices: Iterable[V4l2Device]) -> Optional[V4l2Device]:
    """The device the identity means now: the first of its candidates."""
    found = candidates(identity, devices)
    return found[0] if found else None


def capture_sibling(device: V4l2Device, devices: Iterable[V4l2Device]) -> Optional[V4l2Device]:
    """The capture node of the same camera as `device` (a UVC camera's metadata node and
    its capture node hang under one USB interface in sysfs: .../video4linux/videoN), or
    None when there is none."""
    parent = os.path.dirname(device.sys_path)
    return next((d for d in devices if d.capture and d.sys_path != device.sys_path
                 and os.path.dirname(d.sys_path) == parent), None)


def no_capture_basis(device: V4l2Device) -> Optional[str]:
    """Why `device` is known not to capture video, for the log ("udev's
    ID_V4L_CAPABILITIES is ':'", or VIDIOC_QUERYCAP's device_caps), or None when it
    captures or nothing reliable says it does not (a node only guessed at by its index)."""
    if capture_capable(device):
        return None
    if "ID_V4L_CAPABILITIES" in device.properties:
        return f"udev's ID_V4L_CAPABILITIES is {device.capabilities!r}"
    return device.kernel.basis() if device.kernel is not None else None


def from_udev(device: Any, sysfs: Optional[Sysfs] = None, dev_root: str = DEV_ROOT) -> V4l2Device:
    """A V4l2Device from a pyudev.Device (from a listing or a monitor event).

    A device udev has not initialized (no database entry: systemd-udevd never ran, or has
    not got to it yet) has only the kernel's uevent properties, none of udev's rules' ones;
    what the kernel says of it is added (`kernel_node`). Monitor events come from udevd, so
    only listings ever ask the kernel."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    devnode = str(device.device_node or props.get("DEVNAME", ""))
    kernel = None
    if not getattr(device, "is_initialized", True):
        kernel = kernel_node(sysfs or Sysfs(), str(device.sys_name), dev_root)
    return V4l2Device(devnode=devnode, sys_path=str(device.sys_path), properties=props,
                      kernel=kernel)


def query_device_caps(devnode: str) -> Optional[int]:
    """The node's own capabilities from VIDIOC_QUERYCAP (device_caps, or `capabilities`
    from a driver too old to set V4L2_CAP_DEVICE_CAPS), None if it cannot be asked.

    Opened read-only and non-blocking, as udev's v4l_id does: asking does not stream, and
    works while another process captures."""
    try:
        fd = os.open(devnode, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = bytearray(_CAPABILITY.size)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    capabilities, device_caps = _CAPABILITY.unpack(buf)[4:6]
    return int(device_caps if capabilities & V4L2_CAP_DEVICE_CAPS else capabilities)


@dataclass(frozen=True)
class CaptureFormat:
    """What VIDIOC_G_FMT says a capture node delivers: the real layout of its buffers.

    `bytesperline` is the row stride of the (first) plane, which an ISP aligns past the
    width (RK3588's rkisp to 64 bytes, i.MX8MP's ISI to 16 pixels); `sizeimage` is the
    buffer's size, which may add a tail after the last row (page alignment). The two
    together cannot be told from the buffer's size alone."""

    fourcc: str  # pixelformat as text: "YUYV", "NV12", "MJPG"
    width: int
    height: int
    bytesperline: int
    sizeimage: int


def query_capture_format(devnode: str) -> Optional[CaptureFormat]:
    """The node's current capture format from VIDIOC_G_FMT, or None when the node cannot
    be opened, answers neither the single-planar nor the multi-planar capture type (not a
    V4L2 node, or the ioctl fails), or its format spreads over several planes (whose
    buffers are not one stride apart).

    Opened read-only and non-blocking like `query_device_caps`: V4L2 answers G_FMT on any
    file handle of the node, also while another one (OpenCV's) streams. ISP drivers are
    multi-planar (V4L2_CAP_VIDEO_CAPTURE_MPLANE, as OpenCV since 4.7 takes them): a
    one-plane NV12 or YUYV there says its stride in plane_fmt[0]."""
    try:
        fd = os.open(devnode, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for buf_type in (V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE):
            buf = bytearray(_FORMAT_SIZE)
            struct.pack_into("=I", buf, 0, buf_type)
            try:
                fcntl.ioctl(fd, VIDIOC_G_FMT, buf)
            except OSError:
                continue
            return _capture_format(buf_type, bytes(buf[_FORMAT_UNION_AT:]))
        return None
    finally:
        os.close(fd)


def _capture_format(buf_type: int, union: bytes) -> Optional[CaptureFormat]:
    """The format in v4l2_format's union, as the buffer type `buf_type` lays it out."""
    if buf_type == V4L2_BUF_TYPE_VIDEO_CAPTURE:
        width, height, code, _field, bytesperline, sizeimage = _PIX_FORMAT.unpack_from(union)
    else:
        width, height, code, _field, _colorspace = _PIX_MPLANE.unpack_from(union)
        if union[_NUM_PLANES_AT] != 1:
            return None
        sizeimage, bytesperline = _PLANE_FORMAT.unpack_from(union, _PIX_MPLANE.size)
    fourcc = code.to_bytes(4, "little").decode("latin-1")
    return CaptureFormat(fourcc, width, height, bytesperline, sizeimage)


def _node_present(devnode: str, number: Optional[str]) -> bool:
    """`devnode` is a character device, and the one sysfs `dev` names (a stale node of a
    static /dev may be another device's). A node that reports no number (umockdev's
    emulated nodes say 0:0, which no character device has) is taken by its name."""
    try:
        info = os.stat(devnode)
    except OSError:
        return False
    if not stat.S_ISCHR(info.st_mode):
        return False
    major, sep, minor = (number or "").partition(":")
    if not info.st_rdev or not sep or not (major.isdigit() and minor.isdigit()):
        return True
    return info.st_rdev == os.makedev(int(major), int(minor))


def kernel_node(sysfs: Sysfs, entry: str, dev_root: str = DEV_ROOT) -> KernelNode:
    """What the kernel says of /sys/class/video4linux/<entry> and its node <dev_root>/<entry>
    (devtmpfs names the node as the class entry: the video_device's "video%d")."""
    base = f"{CLASS_DIR}/{entry}"
    devnode = os.path.join(dev_root, entry)
    present = _node_present(devnode, sysfs.read_opt(f"{base}/dev"))
    return KernelNode(
        name=sysfs.read_opt(f"{base}/name") or "",
        index=sysfs.read_int_opt(f"{base}/index"),
        device_caps=query_device_caps(devnode) if present else None,
        present=present,
    )


def kernel_devices(sysfs: Sysfs, dev_root: str = DEV_ROOT) -> list[V4l2Device]:
    """Every node in /sys/class/video4linux, as the kernel alone describes it (no udev),
    in node order."""
    found = [
        V4l2Device(
            devnode=os.path.join(dev_root, entry),
            sys_path=str(sysfs.root / sysfs.resolve(f"{CLASS_DIR}/{entry}")),
            properties={"SUBSYSTEM": SUBSYSTEM},
            kernel=kernel_node(sysfs, entry, dev_root),
        )
        for entry in sysfs.listdir(CLASS_DIR)
    ]
    return sorted(found, key=_node_order)


def udev_database_note(device: V4l2Device) -> Optional[str]:
    """For the log: that `device` was picked without udev's record of it, and on what
    grounds; None for a device udev knows."""
    if device.kernel is None:
        return None
    return (f"udev has no database entry for {device.devnode} (is systemd-udevd running?); "
            f"using it as the kernel describes it: {device.describe()}, capture by "
            f"{device.kernel.basis()}")


def _node_order(device: V4l2Device) -> tuple[str, int, str]:
    """/dev/video2 before /dev/video10."""
    m = re.match(r"(.*?)(\d+)$", device.devnode)
    return (m.group(1), int(m.group(2)), "") if m else (device.devnode, -1, device.devnode)


def _port_order(device: V4l2Device) -> tuple[bool, list[str | int], tuple[str, int, str]]:
    """By physical port (usb-0:2:1.0 before usb-0:10:1.0), nodes without one last."""
    port = device.properties.get("ID_PATH", "")
    natural: list[str | int] = [int(p) if p.isdigit() else p for p in re.split(r"([0-9]+)", port)]
    return (not port, natural, _node_order(device))


def udev_context() -> Any:
    """A pyudev.Context, or None where udev cannot be used (no libudev, containers)."""
    try:
        import pyudev

        return pyudev.Context()
    except Exception:
        return None


def list_devices(
    context: Any = None, sysfs: Optional[Sysfs] = None, dev_root: str = DEV_ROOT
) -> list[V4l2Device]:
    """Every video4linux node, in node order: as udev lists it (with what the kernel says
    of nodes udev has no record of), or where udev cannot be used at all (no libudev,
    sandboxed), as the kernel lists it under `sysfs` (default /sys)."""
    ctx = context if context is not None else udev_context()
    found: Optional[list[V4l2Device]] = None
    if ctx is not None:
        try:
            found = [from_udev(d, sysfs, dev_root) for d in ctx.list_devices(subsystem=SUBSYSTEM)]
        except Exception:  # sandboxed
            found = None
    if found is None:
        found = kernel_devices(sysfs or Sysfs(), dev_root)
    return sorted((d for d in found if d.devnode), key=_node_order)


def monitor(context: Any) -> Any:
    """A pyudev.Monitor on video4linux events (not started). OSError where netlink is denied."""
    import pyudev

    mon = pyudev.Monitor.from_netlink(context)
    mon.filter_by(SUBSYSTEM)
    return mon
