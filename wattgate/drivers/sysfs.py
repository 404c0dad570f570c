"""Text attributes under a sysfs root, with typed errors.

Every power knob wattgate touches is a sysfs attribute: a small text file whose
read and write go straight to a kernel driver. This module is the only place
that opens them, so that:

* every path is resolved under a configurable root (``power.sysfs_root``, default
  ``/sys``), which lets tests run against fake trees of real boards and under
  umockdev, whose LD_PRELOAD redirects the real ``/sys``;
* an errno from the kernel becomes a typed error that names the attribute, so one
  broken knob degrades that knob only (DESIGN.md, "Power");
* a write is skipped when the attribute already holds the value, because some
  stores are not free (a devfreq governor switch restarts the governor, a
  cpufreq governor switch tears down and rebuilds its tunables).

Attributes are named by their path relative to the root, e.g.
``devices/system/cpu/cpufreq/policy0/scaling_governor``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional, Protocol

UDEV_RULE = "systemd/60-wattgate.rules"
MAX_ATTRIBUTE = 65536


class SysfsError(OSError):
    """An attribute could not be read or written; carries the attribute and its path."""

    def __init__(self, attribute: str, path: Path, err: int, action: str, detail: str = "") -> None:
        self.attribute = attribute
        self.path = path
        self.action = action
        message = f"{action} {path}: {os.strerror(err) if err else 'failed'}"
        if detail:
            message += f" ({detail})"
        super().__init__(err, message)

    def __str__(self) -> str:
        return str(self.args[1])


class AttributeMissing(SysfsError):
    """ENOENT: the kernel, driver or board does not have this attribute."""


class AttributeDenied(SysfsError):
    """EACCES/EPERM/EROFS: the daemon's user may not write it (see the udev rule)."""


class AttributeInvalid(SysfsError):
    """EINVAL: the driver rejected the value."""


class AttributeBusy(SysfsError):
    """EBUSY: the driver refuses the change in its current state."""


def _error_for(attribute: str, path: Path, exc: OSError, action: str) -> SysfsError:
    err = exc.errno or 0
    if err == errno.ENOENT:
        return AttributeMissing(attribute, path, err, action)
    if err in (errno.EACCES, errno.EPERM):
        return AttributeDenied(
            attribute,
            path,
            err,
            action,
            f"the daemon's group needs write access to {attribute}: install {UDEV_RULE}",
        )
    if err == errno.EROFS:
        # ProtectKernelTunables= makes /sys read-only unless ReadWritePaths= opens it
        # (REFERENCE.md, systemd).
        return AttributeDenied(
            attribute, path, err, action, "sysfs is read-only here: check ReadWritePaths="
        )
    if err == errno.EINVAL:
        return AttributeInvalid(attribute, path, err, action, "the driver rejected the value")
    if err == errno.EBUSY:
        return AttributeBusy(attribute, path, err, action, "the driver is busy or locked")
    return SysfsError(attribute, path, err, action)


class AttributeIO(Protocol):
    """The two system calls behind an attribute; tests swap in one that injects errno."""

    def read_text(self, path: Path) -> str: ...

    def write_text(self, path: Path, data: str) -> None: ...


class OsIO:
    """Plain open/read/write: one write() per store, as the kernel expects of sysfs."""

    def read_text(self, path: Path) -> str:
        # Bounded: a text attribute is at most one page; a wrong path to a device
        # node such as /dev/zero must not read forever.
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(MAX_ATTRIBUTE)

    def write_text(self, path: Path, data: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)


class Sysfs:
    """Read and write text attributes below ``root``."""

    def __init__(self, root: str | os.PathLike[str] = "/sys", io: Optional[AttributeIO] = None):
        self.root = Path(root)
        self.io: AttributeIO = io if io is not None else OsIO()

    @property
    def fs(self) -> Sysfs:
        """Lets a bare Sysfs stand where a writer is expected (unjournaled writes)."""
        return self

    def path(self, attribute: str) -> Path:
        return self.root / attribute.lstrip("/")

    def exists(self, attribute: str) -> bool:
        return os.path.lexists(self.path(attribute))

    def is_dir(self, attribute: str) -> bool:
        return self.path(attribute).is_dir()

    def listdir(self, attribute: str) -> list[str]:
        """Entries of a directory in name order, [] when it is absent or unreadable (a
        class directory a hardened kernel or an LSM denies is no devices, not a crash)."""
        try:
            return sorted(os.listdir(self.path(attribute)))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []

    @staticmethod
    def configured(path: str) -> str:
        """A sysfs path as the config gives it, relative to the root: `/sys/devices/x`
        (the path on the board, what users copy) is `devices/x` under a root that may be a
        fake tree, as is `devices/x/`."""
        text = path.strip()
        return (text[len("/sys/"):] if text.startswith("/sys/") else text).strip("/")

    def resolve(self, attribute: str) -> str:
        """The attribute path with symlinks followed, relative to the root.

        /sys/class/* entries are symlinks into /sys/devices; following them tells
        which device (and so which driver and power/ directory) a class entry is.
        """
        real = os.path.realpath(self.path(attribute))
        root = os.path.realpath(self.root)
        if real == root:
            return ""
        if real.startswith(root + os.sep):
            return real[len(root) + 1 :]
        return attribute.strip("/")

    def link_name(self, attribute: str) -> Optional[str]:
        """Basename of a symlink's target (e.g. a device's ``driver``), None if absent."""
        try:
            return os.path.basename(os.readlink(self.path(attribute)))
        except OSError:
            return None

    def read_raw(self, attribute: str) -> str:
        path = self.path(attribute)
        try:
            return self.io.read_text(path)
        except OSError as exc:
            raise _error_for(attribute, path, exc, "read") from exc

    def read(self, attribute: str) -> str:
        """The attribute's text without the trailing newline."""
        return self.read_raw(attribute).strip()

    def read_int(self, attribute: str) -> int:
        text = self.read(attribute)
        try:
            return int(text.split()[0])
        except (ValueError, IndexError) as exc:
            path = self.path(attribute)
            raise SysfsError(
                attribute, path, errno.EINVAL, "parse", f"not an integer: {text!r}"
            ) from exc

    def read_opt(self, attribute: str) -> Optional[str]:
        """Read, or None when the attribute is missing or unreadable."""
        try:
            return self.read(attribute)
        except SysfsError:
            return None

    def read_int_opt(self, attribute: str) -> Optional[int]:
        try:
            return self.read_int(attribute)
        except SysfsError:
            return None

    def read_words(self, attribute: str) -> tuple[str, ...]:
        """A space-separated list attribute (governors, frequencies), () if missing."""
        text = self.read_opt(attribute)
        return tuple(text.split()) if text else ()

    def read_int_words(self, attribute: str) -> tuple[int, ...]:
        """A list of integers (a frequency table), sorted and unique; () when the
        attribute is missing or any word is not an integer (a table that cannot be
        read whole is not a table to snap to)."""
        try:
            return tuple(sorted({int(word) for word in self.read_words(attribute)}))
        except ValueError:
            return ()

    def write_raw(self, attribute: str, data: str) -> None:
        """Store ``data`` as is; no comparison, no newline added."""
        path = self.path(attribute)
        try:
            self.io.write_text(path, data)
        except OSError as exc:
            raise _error_for(attribute, path, exc, "write") from exc

    def write(
        self, attribute: str, value: str, *, restore: Optional[str] = None, always: bool = False
    ) -> bool:
        """Store ``value`` unless the attribute already holds it; True when it wrote.

        ``restore`` is accepted for signature compatibility with the journaled
        writer and ignored: a bare Sysfs keeps no journal. ``always``: store even when
        the attribute reads ``value`` (see Writer).
        """
        del restore
        value = str(value).strip()
        if not always and self.read(attribute) == value:
            return False
        self.write_raw(attribute, value + "\n")
        return True


class Writer(Protocol):
    """What drivers write through: a Sysfs, or the daemon's journaled writer."""

    @property
    def fs(self) -> Sysfs: ...

    def write(
        self, attribute: str, value: str, *, restore: Optional[str] = None, always: bool = False
    ) -> bool:
        """Store value unless the attribute reads it already; ``always`` stores it anyway:
        a frequency limit reads the lowest of all requests (a thermal cap's while one
        binds), not this one, so a read that matches proves nothing."""
