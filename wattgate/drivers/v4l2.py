"""V4L2 cameras as udev sees them: capture nodes, and which one a configured identity means.

Mechanism only: no threads, no timers. The supervisor (wattgate/daemon/camera_watch.py) owns
the udev monitor thread and asks `matches` about each add/remove event.

An identity is what `camera.source` says, resolved again every time the camera comes back,
because the node name is not stable: a re-plugged USB camera may return as /dev/video2.

* ``auto``: the first node whose ID_V4L_CAPABILITIES has ``capture`` (a UVC camera also has a
  metadata node with the same serial; it lacks ``capture``).
* a path: ``/dev/video0``, ``0`` (= /dev/video0), or a udev symlink such as
  ``/dev/v4l/by-id/usb-...-video-index0`` or ``/dev/v4l/by-path/...``. A symlink is matched
  against the device's DEVLINKS, so it still names the camera while the link is absent.
* ``udev:KEY=VALUE[,KEY=VALUE...]``: udev properties, e.g. ``udev:ID_SERIAL=Foo_Cam_1234``;
  values may use shell wildcards (``udev:ID_V4L_PRODUCT=HD USB*``). Only capture nodes match
  (or nodes whose capabilities udev did not record). When several cameras match, the one on
  the first port (ID_PATH) is meant: see `candidates`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

SUBSYSTEM = "video4linux"
UDEV_PREFIX = "udev:"
AUTO = "auto"

IdentityKind = Literal["auto", "path", "udev"]


@dataclass(frozen=True)
class V4l2Device:
    """One video4linux node with the udev properties the matching needs."""

    devnode: str
    sys_path: str
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def capabilities(self) -> str:
        return self.properties.get("ID_V4L_CAPABILITIES", "")

    @property
    def capture(self) -> bool:
        """udev says this node captures video (ID_V4L_CAPABILITIES contains capture)."""
        return ":capture:" in self.capabilities

    @property
    def links(self) -> tuple[str, ...]:
        """The node's udev symlinks (/dev/v4l/by-id/..., /dev/v4l/by-path/...)."""
        return tuple(self.properties.get("DEVLINKS", "").split())

    @property
    def name(self) -> str:
        return self.properties.get("ID_V4L_PRODUCT") or os.path.basename(self.devnode)

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


def from_udev(device: Any) -> V4l2Device:
    """A V4l2Device from a pyudev.Device (from a listing or a monitor event)."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    return V4l2Device(
        devnode=str(device.device_node or props.get("DEVNAME", "")),
        sys_path=str(device.sys_path),
        properties=props,
    )


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


def list_devices(context: Any = None) -> list[V4l2Device]:
    """Every video4linux node udev knows, in node order; [] when udev is unavailable."""
    ctx = context if context is not None else udev_context()
    if ctx is None:
        return []
    try:
        found = [from_udev(d) for d in ctx.list_devices(subsystem=SUBSYSTEM)]
    except Exception:  # no /run/udev, sandboxed
        return []
    return sorted((d for d in found if d.devnode), key=_node_order)


def monitor(context: Any) -> Any:
    """A pyudev.Monitor on video4linux events (not started). OSError where netlink is denied."""
    import pyudev

    mon = pyudev.Monitor.from_netlink(context)
    mon.filter_by(SUBSYSTEM)
    return mon
