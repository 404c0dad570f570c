"""Vendor power knobs that sit beside the standard ABIs.

* galcore ``gpu_govern`` (i.MX8M GPU/NPU): a *driver* attribute at
  ``bus/platform/drivers/galcore/gpu_govern``. Reading gives a report
  ("GPU support N modes" / "<mode>:\\tcore_clk frequency: ..." /
  "Currently GPU runs on mode <mode>", gc_hal_kernel_platform_imx.c); writing a
  mode name switches all cores. It exists only when the device tree has an OPP
  table, and the store silently ignores unknown names, hence the check here.
* Jetson ``railgate_enable`` on the GPU device: 1 lets the GPU rail be gated when idle.
* Coral PCIe (apex): ``class/apex/apex_N/temp`` and trip points, read only
  (the chip throttles itself; REFERENCE.md).
* Intel NPU (ivpu): ``npu_busy_time_us`` on the PCI device, read only, for the
  caller to difference between two polls.
"""

from __future__ import annotations

import errno
import re
from dataclasses import asdict, dataclass
from typing import Optional, Union

from wattgate.drivers.sysfs import AttributeInvalid, AttributeMissing, Sysfs, SysfsError, Writer

GALCORE_GOVERN = "bus/platform/drivers/galcore/gpu_govern"
GALCORE_MODES = ("overdrive", "nominal", "underdrive")
_CURRENT = re.compile(r"Currently GPU runs on mode\s+(\w+)")
_MODE_LINE = re.compile(r"^(overdrive|nominal|underdrive):", re.MULTILINE)


@dataclass(frozen=True)
class GalcoreGovern:
    modes: tuple[str, ...]
    current: Optional[str]


def parse_gpu_govern(text: str) -> GalcoreGovern:
    match = _CURRENT.search(text)
    modes = tuple(_MODE_LINE.findall(text))
    current = match.group(1) if match else None
    if current is None and text.strip() in GALCORE_MODES:
        current = text.strip()
    return GalcoreGovern(modes, current)


def read_gpu_govern(fs: Sysfs) -> Optional[GalcoreGovern]:
    text = fs.read_opt(GALCORE_GOVERN)
    return parse_gpu_govern(text) if text is not None else None


def set_gpu_govern(w: Writer, mode: str) -> bool:
    """Switch galcore to ``mode``; True when it wrote. Journals the mode, not the report."""
    state = read_gpu_govern(w.fs)
    if state is None:
        raise AttributeMissing(GALCORE_GOVERN, w.fs.path(GALCORE_GOVERN), errno.ENOENT, "write")
    allowed = state.modes or GALCORE_MODES
    if mode not in allowed:
        raise AttributeInvalid(
            GALCORE_GOVERN,
            w.fs.path(GALCORE_GOVERN),
            errno.EINVAL,
            "write",
            f"{mode!r} not in {list(allowed)}",
        )
    if state.current == mode:
        return False
    if state.current is None:
        # The store takes a mode name and ignores anything else: without the current mode
        # there is nothing to write back, and the report itself would be "restored" silently.
        raise SysfsError(
            GALCORE_GOVERN,
            w.fs.path(GALCORE_GOVERN),
            errno.EIO,
            "write",
            "the report names no current mode, so it could not be restored",
        )
    return w.write(GALCORE_GOVERN, mode, restore=state.current)


def read_railgate(fs: Sysfs, device: str) -> Optional[bool]:
    value = fs.read_int_opt(f"{device}/railgate_enable")
    return None if value is None else value != 0


def set_railgate(w: Writer, device: str, enabled: bool) -> bool:
    attribute = f"{device}/railgate_enable"
    if not w.fs.exists(attribute):
        raise AttributeMissing(attribute, w.fs.path(attribute), errno.ENOENT, "write")
    return w.write(attribute, "1" if enabled else "0")


@dataclass(frozen=True)
class ApexThermal:
    name: str
    temp_mc: Optional[int]
    trip_points_mc: tuple[int, ...]
    warn_mc: tuple[int, ...]

    def to_dict(self) -> dict[str, Union[str, int, tuple[int, ...], None]]:
        return asdict(self)


def read_apex(fs: Sysfs) -> list[ApexThermal]:
    """Every Coral PCIe chip's temperature and trip points (m°C)."""
    found = []
    for name in fs.listdir("class/apex"):
        base = f"class/apex/{name}"
        trips = [fs.read_int_opt(f"{base}/trip_point{i}_temp") for i in range(3)]
        warns = [fs.read_int_opt(f"{base}/hw_temp_warn{i}") for i in (1, 2)]
        found.append(
            ApexThermal(
                name=name,
                temp_mc=fs.read_int_opt(f"{base}/temp"),
                trip_points_mc=tuple(t for t in trips if t is not None),
                warn_mc=tuple(t for t in warns if t is not None),
            )
        )
    return found


def read_npu_busy_us(fs: Sysfs, device: str) -> Optional[int]:
    """Cumulative busy time of an Intel NPU in µs (poll about once a second)."""
    return fs.read_int_opt(f"{device}/npu_busy_time_us")
