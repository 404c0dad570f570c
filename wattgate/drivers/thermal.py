"""Thermal zones and cooling devices, read only.

``class/thermal/thermal_zoneN/{type,temp}`` in millidegrees Celsius, with
``trip_point_K_{temp,type}`` (REFERENCE.md, "Thermal and power readings"), and
``class/thermal/cooling_deviceN/{type,cur_state,max_state}``: what throttles what, and how
hard right now (state 0: not at all).

An ACPI processor's cooling device (type ``Processor``) does not name its CPU:
drivers/acpi/processor_thermal.c acpi_processor_thermal_init links the cooling device's
``device`` to the ACPI processor device, and drivers/acpi/glue.c acpi_bind_one (called by
acpi_processor.c acpi_processor_add for get_cpu_device(pr->id)) links that device's
``physical_node`` to ``devices/system/cpu/cpuN``. Its frequency steps cap every CPU of that
CPU's physical package (cpufreq_set_cur_state), ``cpuN/topology/physical_package_id``
(Documentation/ABI/stable/sysfs-devices-system-cpu).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Optional

from wattgate.drivers.sysfs import Sysfs

THERMAL = "class/thermal"
CPUS = "devices/system/cpu"
#: The type drivers/acpi/processor_thermal.c registers its cooling devices with.
ACPI_PROCESSOR = "Processor"
_CPU_DEVICE = re.compile(rf"{CPUS}/cpu(\d+)")
#: include/linux/thermal.h THERMAL_TEMP_INVALID is -274000: a trip the kernel has no
#: temperature for shows as that. Anything below absolute zero is no temperature.
ABSOLUTE_ZERO_MC = -273150


@dataclass(frozen=True)
class Trip:
    temp_mc: int
    type: str


@dataclass(frozen=True)
class ThermalZone:
    name: str
    type: Optional[str]
    temp_mc: Optional[int]
    trips: tuple[Trip, ...]

    @property
    def celsius(self) -> Optional[float]:
        return None if self.temp_mc is None else self.temp_mc / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_zone(fs: Sysfs, name: str) -> ThermalZone:
    base = f"{THERMAL}/{name}"
    trips = []
    k = 0
    while fs.exists(f"{base}/trip_point_{k}_temp"):
        temp = fs.read_int_opt(f"{base}/trip_point_{k}_temp")
        kind = fs.read_opt(f"{base}/trip_point_{k}_type") or "unknown"
        if temp is not None and temp >= ABSOLUTE_ZERO_MC:  # not THERMAL_TEMP_INVALID
            trips.append(Trip(temp, kind))
        k += 1
    # temp reads EAGAIN/ENODATA while a sensor is not ready; that is "no reading".
    temp_mc = fs.read_int_opt(f"{base}/temp")
    if temp_mc is not None and temp_mc < ABSOLUTE_ZERO_MC:
        temp_mc = None
    return ThermalZone(name, fs.read_opt(f"{base}/type"), temp_mc, tuple(trips))


def _numbered(fs: Sysfs, prefix: str) -> list[str]:
    """The ``<prefix>N`` entries of class/thermal in N order (zones and cooling devices
    sit side by side there)."""
    names = [n for n in fs.listdir(THERMAL) if n.startswith(prefix) and n[len(prefix):].isdigit()]
    return sorted(names, key=lambda n: int(n[len(prefix):]))


def zone_names(fs: Sysfs) -> list[str]:
    """The thermal_zoneN entries in N order."""
    return _numbered(fs, "thermal_zone")


def discover_zones(fs: Sysfs) -> list[ThermalZone]:
    return [read_zone(fs, n) for n in zone_names(fs)]


@dataclass(frozen=True)
class CoolingDevice:
    name: str
    type: Optional[str]
    cur_state: Optional[int]
    max_state: Optional[int]
    #: A Processor device's CPUs: those of its own CPU's physical package, which its state
    #: caps. None for other types, and when sysfs does not tell (then it may cap any CPU).
    cpus: Optional[tuple[int, ...]] = None

    @property
    def active(self) -> bool:
        """Whether it throttles now: any state above 0."""
        return bool(self.cur_state)


def cpu_packages(fs: Sysfs) -> dict[int, int]:
    """CPU number -> physical_package_id, for the CPUs whose topology sysfs shows."""
    packages = {}
    for entry in fs.listdir(CPUS):
        if entry.startswith("cpu") and entry[3:].isdigit():
            package = fs.read_int_opt(f"{CPUS}/{entry}/topology/physical_package_id")
            if package is not None:
                packages[int(entry[3:])] = package
    return packages


def _processor_cpus(fs: Sysfs, base: str, packages: Mapping[int, int]) -> Optional[tuple[int, ...]]:
    """The CPUs a Processor device's state caps, None when its CPU or that CPU's package
    is not to be found (see the module's docstring for the links)."""
    node = f"{base}/device/physical_node"
    match = _CPU_DEVICE.fullmatch(fs.resolve(node)) if fs.exists(node) else None
    package = packages.get(int(match[1])) if match is not None else None
    if package is None:
        return None
    return tuple(sorted(cpu for cpu, p in packages.items() if p == package))


def read_cooling_device(
    fs: Sysfs, name: str, packages: Optional[Mapping[int, int]] = None
) -> CoolingDevice:
    """``packages`` is cpu_packages(fs), read here when not given and needed."""
    base = f"{THERMAL}/{name}"
    cdev_type = fs.read_opt(f"{base}/type")
    cpus = None
    if cdev_type == ACPI_PROCESSOR:
        cpus = _processor_cpus(fs, base, cpu_packages(fs) if packages is None else packages)
    return CoolingDevice(name, cdev_type, fs.read_int_opt(f"{base}/cur_state"),
                         fs.read_int_opt(f"{base}/max_state"), cpus)


def discover_cooling_devices(fs: Sysfs) -> list[CoolingDevice]:
    """The cooling_deviceN entries in N order; [] where the kernel has none (or no
    class/thermal at all)."""
    names = _numbered(fs, "cooling_device")
    packages = cpu_packages(fs) if names else {}
    return [read_cooling_device(fs, n, packages) for n in names]


def zone_by_type(zones: list[ThermalZone], zone_type: str) -> Optional[ThermalZone]:
    for zone in zones:
        if zone.type == zone_type:
            return zone
    return None
