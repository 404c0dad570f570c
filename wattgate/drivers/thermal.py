"""Thermal zones and cooling devices, read only.

``class/thermal/thermal_zoneN/{type,temp}`` in millidegrees Celsius, with
``trip_point_K_{temp,type}`` (REFERENCE.md, "Thermal and power readings"), and
``class/thermal/cooling_deviceN/{type,cur_state,max_state}``: what throttles what, and how
hard right now (state 0: not at all).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from wattgate.drivers.sysfs import Sysfs

THERMAL = "class/thermal"
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

    @property
    def active(self) -> bool:
        """Whether it throttles now: any state above 0."""
        return bool(self.cur_state)


def read_cooling_device(fs: Sysfs, name: str) -> CoolingDevice:
    base = f"{THERMAL}/{name}"
    return CoolingDevice(name, fs.read_opt(f"{base}/type"), fs.read_int_opt(f"{base}/cur_state"),
                         fs.read_int_opt(f"{base}/max_state"))


def discover_cooling_devices(fs: Sysfs) -> list[CoolingDevice]:
    """The cooling_deviceN entries in N order; [] where the kernel has none (or no
    class/thermal at all)."""
    return [read_cooling_device(fs, n) for n in _numbered(fs, "cooling_device")]


def zone_by_type(zones: list[ThermalZone], zone_type: str) -> Optional[ThermalZone]:
    for zone in zones:
        if zone.type == zone_type:
            return zone
    return None
