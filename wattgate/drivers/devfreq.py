"""devfreq devices (NPU, GPU, memory controller): discover, read, set governor and limits.

Kernel ABI: Documentation/ABI/testing/sysfs-class-devfreq (REFERENCE.md). All
frequencies are in Hz. ``class/devfreq/<name>`` is a symlink into the device
tree; its parent device is where runtime PM and vendor knobs live.

A devfreq device may be a thermal cooling device (drivers/thermal/devfreq_cooling.c
of_devfreq_cooling_register_power). Its state k caps the device at the k-th highest OPP:
a dev_pm_qos DEV_PM_QOS_MAX_FREQUENCY request on the parent device, or, in kernels before
that request, OPPs disabled above it (partition_enable_opps). max_freq shows the effective
max either way (devfreq.c max_freq_show: devfreq_get_freq_range takes the lowest of the QoS
max, the user's request among them, and the highest enabled OPP, scaling_max_freq), and
min_freq is clamped to it ("if (*min_freq > *max_freq) *min_freq = *max_freq").
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from wattgate.drivers.governors import kernel_modules, store_governor
from wattgate.drivers.limits import snap, write_limits
from wattgate.drivers.sysfs import AttributeMissing, Sysfs, Writer
from wattgate.drivers.thermal import (
    CoolingDevice,
    ThermalCap,
    lowest_cap,
    state_ceiling,
    unthrottled_max,
    unthrottled_min,
)

DEVFREQ = "class/devfreq"
# devfreq_cooling.c names its cooling device "devfreq-" + dev_name(df->dev.parent)
# ("devfreq-fdab0000.npu"); older kernels numbered them with an IDA in registration order,
# "thermal-devfreq-0", which sysfs does not tie to a device.
COOLING_PREFIX = "devfreq-"
LEGACY_COOLING = re.compile(r"thermal-devfreq-\d+")

# devfreq.c try_then_request_governor loads "governor_<name>", but simple_ondemand's
# module is governor_simpleondemand (DEVFREQ_GOV_SIMPLE_ONDEMAND is special-cased there).
MODULE_GOVERNORS = {"simpleondemand": "simple_ondemand"}
# DEVFREQ_GOV_FLAG_IMMUTABLE: governor_store refuses to switch to it (EINVAL), loaded or not.
IMMUTABLE_GOVERNORS = ("passive",)

# Rockchip BSP: "load" reads "<percent>@<freq>Hz" (e.g. "100@600000000Hz").
_LOAD_AT = re.compile(r"^\s*(\d+)\s*@\s*(\d+)\s*Hz\s*$")


@dataclass(frozen=True)
class DevfreqDevice:
    """One devfreq device as read at one moment."""

    name: str
    path: str
    device: str
    governor: Optional[str]
    governors: tuple[str, ...]
    cur_hz: Optional[int]
    min_hz: Optional[int]
    max_hz: Optional[int]
    frequencies_hz: tuple[int, ...]
    load_percent: Optional[int]
    # Governors built as modules not loaded yet: not in available_governors, yet a store of
    # the name loads the module (governor_store: try_then_request_governor, request_module
    # "governor_<name>") and takes it, when the module loads.
    loadable: tuple[str, ...] = ()

    def attr(self, name: str) -> str:
        return f"{self.path}/{name}"


def parse_load(text: Optional[str]) -> Optional[int]:
    """Percent busy from a devfreq ``load`` attribute, None when absent or unknown."""
    if not text:
        return None
    match = _LOAD_AT.match(text)
    if match:
        return int(match.group(1))
    return None


def loadable_governors(modules: Mapping[str, Path], listed: Sequence[str]) -> tuple[str, ...]:
    """The devfreq governors of ``modules`` (governor_<name>) not in ``listed``."""
    names = (m[len("governor_"):] for m in modules if m.startswith("governor_"))
    # a "governor_simple_ondemand" is not what the kernel asks modprobe for
    governors = (MODULE_GOVERNORS.get(n, n) for n in names
                 if n and n not in MODULE_GOVERNORS.values())
    return tuple(sorted(g for g in governors
                        if g not in listed and g not in IMMUTABLE_GOVERNORS))


def read_devfreq(
    fs: Sysfs, name: str, modules: Optional[Mapping[str, Path]] = None
) -> DevfreqDevice:
    """Device ``name`` as it reads now; ``modules`` (governors.kernel_modules) is read when
    not given."""
    path = f"{DEVFREQ}/{name}"
    if not fs.exists(path):
        raise AttributeMissing(path, fs.path(path), errno.ENOENT, "read")
    real = fs.resolve(path)
    device = real.rsplit("/devfreq/", 1)[0] if "/devfreq/" in real else real
    freqs = fs.read_int_words(f"{path}/available_frequencies")
    governors = fs.read_words(f"{path}/available_governors")
    if modules is None:
        modules = kernel_modules(fs.root)
    return DevfreqDevice(
        name=name,
        path=path,
        device=device,
        governor=fs.read_opt(f"{path}/governor"),
        governors=governors,
        cur_hz=fs.read_int_opt(f"{path}/cur_freq"),
        min_hz=fs.read_int_opt(f"{path}/min_freq"),
        max_hz=fs.read_int_opt(f"{path}/max_freq"),
        frequencies_hz=tuple(freqs),
        load_percent=parse_load(fs.read_opt(f"{path}/load")),
        loadable=loadable_governors(modules, governors),
    )


def discover_devfreq(fs: Sysfs) -> list[DevfreqDevice]:
    modules = kernel_modules(fs.root)
    return [read_devfreq(fs, name, modules) for name in fs.listdir(DEVFREQ)]


def set_governor(w: Writer, dev: DevfreqDevice, wanted: Sequence[str]) -> str:
    """Write the first of ``wanted`` that the device offers or the kernel can load;
    returns it (governors.store_governor)."""
    return store_governor(w, dev.attr("governor"), dev.governor, dev.governors,
                          dev.loadable, wanted)


def snap_hz(dev: DevfreqDevice, hz: int, *, upward: bool) -> int:
    """Snap to an OPP of available_frequencies: a ceiling rounds down, a floor up."""
    return snap(dev.frequencies_hz, hz, upward=upward)


def set_limits(
    w: Writer, dev: DevfreqDevice, min_hz: Optional[int] = None, max_hz: Optional[int] = None
) -> tuple[Optional[int], Optional[int]]:
    """Write min_freq / max_freq snapped to OPPs; ceiling first when the floor rises above it."""
    new_min = snap_hz(dev, min_hz, upward=True) if min_hz is not None else None
    new_max = snap_hz(dev, max_hz, upward=False) if max_hz is not None else None
    return write_limits(w, dev.attr, ("min_freq", "max_freq"), new_min, new_max, dev.max_hz)


def cools(device: CoolingDevice, dev: DevfreqDevice) -> bool:
    """Whether ``device`` caps the frequency of ``dev``: its devfreq cooling device, named
    after dev's parent device. A legacy numbered one may be any devfreq device's; it is
    taken as dev's when its max_state fits dev's table (devfreq_cooling.c: max_state is the
    OPP count less one, and available_frequencies lists the OPPs) or the table is unknown:
    the safe guess, as a cap taken for the user's limit would stay for good. One that fits
    is still not dev's when dev's max_freq reads above the ceiling its state would set."""
    cdev_type = device.type or ""
    if cdev_type == COOLING_PREFIX + dev.device.rsplit("/", 1)[-1]:
        return True
    if LEGACY_COOLING.fullmatch(cdev_type) is None:
        return False
    table = dev.frequencies_hz
    if not table or device.max_state is None:
        return True
    return len(table) == device.max_state + 1 and not _reads_above_ceiling(dev, device)


def _reads_above_ceiling(dev: DevfreqDevice, device: CoolingDevice) -> bool:
    """Whether dev's max_freq, as read at discovery, is above the ceiling ``device``'s state
    would set on dev: max_freq shows the lowest max request, so such a cap is not dev's
    (on an RK3588 5.10 BSP the GPU's and the NPU's tables are both 8 OPPs long). The cap's
    request is in whole kHz, rounded up (devfreq_cooling.c devfreq_cooling_set_cur_state:
    DIV_ROUND_UP(freq, HZ_PER_KHZ)); max_freq shows it times HZ_PER_KHZ."""
    if device.cur_state is None or dev.max_hz is None:
        return False
    ceiling = state_ceiling(dev.frequencies_hz, device.cur_state, device.max_state)
    return ceiling is not None and dev.max_hz > -(-ceiling // 1000) * 1000


def thermal_cap(dev: DevfreqDevice, devices: Sequence[CoolingDevice]) -> Optional[ThermalCap]:
    """The active cooling device of ``dev`` with the lowest ceiling (an unknown one lowest
    of all), if any: where max_freq is when a cap binds. ThermalCap.freq is in Hz."""
    return lowest_cap(
        ThermalCap(device, state_ceiling(dev.frequencies_hz, device.cur_state, device.max_state))
        for device in devices
        if device.active and device.cur_state is not None and cools(device, dev)
    )


def unthrottled_hz(
    dev: DevfreqDevice,
    name: str,
    hz: int,
    cap: ThermalCap,
    span: tuple[Optional[int], Optional[int]],
) -> Optional[int]:
    """What the board has in ``name`` of ``dev``, read as ``hz`` while ``cap`` throttles it,
    when that read is the cap's doing; None when it is the board's own. ``span`` is the
    device's (lowest, highest) frequency: what min_freq and max_freq read without a user
    request. ``dev.max_hz`` is as read at discovery, before any write of this daemon's.
    The rules are cpufreq's (thermal.unthrottled_max, unthrottled_min)."""
    if name == "max_freq":
        return unthrottled_max(hz, span[1], cap)
    if name == "min_freq":
        return unthrottled_min(hz, span[0], dev.max_hz, cap)
    return None
