"""Runtime PM of a device: let it autosuspend, or hold it on.

Kernel ABI: Documentation/ABI/testing/sysfs-devices-power (REFERENCE.md).
``power/control`` is ``auto`` (the driver may suspend the idle device) or ``on``
(held active); ``power/autosuspend_delay_ms`` is how long it must idle first.
The times are in milliseconds since boot, for the caller to difference.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from typing import Optional, Union

from wattgate.drivers.sysfs import AttributeInvalid, AttributeMissing, Sysfs, Writer

CONTROL_VALUES = ("auto", "on")


@dataclass(frozen=True)
class RuntimePm:
    device: str
    control: Optional[str]
    autosuspend_delay_ms: Optional[int]
    status: Optional[str]
    active_time_ms: Optional[int]
    suspended_time_ms: Optional[int]

    def to_dict(self) -> dict[str, Union[str, int, None]]:
        return asdict(self)


def read_runtime_pm(fs: Sysfs, device: str) -> Optional[RuntimePm]:
    """The device's runtime-PM state, None when it has no power/control."""
    power = f"{device}/power"
    control = fs.read_opt(f"{power}/control")
    if control is None:
        return None
    # autosuspend_delay_ms reads EIO when the driver does not use autosuspend.
    return RuntimePm(
        device=device,
        control=control,
        autosuspend_delay_ms=fs.read_int_opt(f"{power}/autosuspend_delay_ms"),
        status=fs.read_opt(f"{power}/runtime_status"),
        active_time_ms=fs.read_int_opt(f"{power}/runtime_active_time"),
        suspended_time_ms=fs.read_int_opt(f"{power}/runtime_suspended_time"),
    )


def set_control(w: Writer, device: str, value: str) -> bool:
    """Write power/control (``auto`` or ``on``); True when it changed."""
    attribute = f"{device}/power/control"
    if value not in CONTROL_VALUES:
        raise AttributeInvalid(
            attribute, w.fs.path(attribute), errno.EINVAL, "write", f"{value!r} is not auto|on"
        )
    return w.write(attribute, value)


def set_autosuspend_delay(w: Writer, device: str, delay_ms: int) -> bool:
    """Write power/autosuspend_delay_ms (negative values forbid autosuspend)."""
    attribute = f"{device}/power/autosuspend_delay_ms"
    if not w.fs.exists(attribute):
        raise AttributeMissing(attribute, w.fs.path(attribute), errno.ENOENT, "write")
    return w.write(attribute, str(int(delay_ms)))
