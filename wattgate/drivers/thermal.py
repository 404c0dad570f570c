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
(Documentation/ABI/stable/sysfs-devices-system-cpu), in steps of a percentage the kernel may
take from the SoC (ProcessorSteps).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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
# No silicon a board carries works at 250 °C (junction limits are 105..150 °C): a reading
# above is a broken sensor's garbage (2147483647, an unset register), not a temperature. It
# switched profiles and showed in status as 2147483.6 °C.
IMPLAUSIBLE_MC = 250_000


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
    if temp_mc is not None and not ABSOLUTE_ZERO_MC <= temp_mc <= IMPLAUSIBLE_MC:
        temp_mc = None
    return ThermalZone(name, fs.read_opt(f"{base}/type"), temp_mc, tuple(trips))


def _numbered(fs: Sysfs, prefix: str, directory: str = THERMAL) -> list[str]:
    """The ``<prefix>N`` entries of ``directory`` in N order (in class/thermal zones and
    cooling devices sit side by side)."""
    names = [n for n in fs.listdir(directory)
             if n.startswith(prefix) and n[len(prefix):].isdigit()]
    return sorted(names, key=lambda n: int(n[len(prefix):]))


def zone_names(fs: Sysfs) -> list[str]:
    """The thermal_zoneN entries in N order."""
    return _numbered(fs, "thermal_zone")


def zone_types(fs: Sysfs) -> tuple[str, ...]:
    """The names temperatures are keyed by, once each, in zone order: a zone's type, else
    its directory name (as the readings key them). Only `type` is read, a fixed string:
    no sensor is asked for a temperature."""
    return tuple(dict.fromkeys(fs.read_opt(f"{THERMAL}/{name}/type") or name
                               for name in zone_names(fs)))


def discover_zones(fs: Sysfs) -> list[ThermalZone]:
    return [read_zone(fs, n) for n in zone_names(fs)]


@dataclass(frozen=True)
class ProcessorSteps:
    """The cpufreq steps of Processor cooling devices (drivers/acpi/processor_thermal.c):
    state k caps at cpuinfo.max_freq * (100 - k * percent) / 100 for k up to max_step
    (cpufreq_update_thermal_limit, cpufreq_get_max_state); the states above add T-states
    (acpi_processor_set_throttling), which cap no frequency."""

    percent: int
    max_step: int

    def ceiling(self, cpuinfo_max_khz: int, state: int) -> int:
        """The ceiling cooling state ``state`` sets on a policy, in kHz."""
        return cpuinfo_max_khz * (100 - self.percent * min(state, self.max_step)) // 100


#: cpufreq_thermal_reduction_pctg and cpufreq_thermal_max_step as processor_thermal.c has them.
PROCESSOR_STEPS = ProcessorSteps(20, 3)
#: drivers/acpi/arm64/thermal_cpufreq.c acpi_arch_thermal_cpufreq_pctg (Linux 6.8): the
#: percentage by SMCCC SoC ID, SMCCC_SOC_ID_T241 (NVIDIA Tegra241, Grace) 5. Keyed by
#: ``devices/socN/soc_id`` as drivers/firmware/smccc/soc_id.c smccc_soc_init shows that ID:
#: "jep106:%02x%02x:%04x", JEP106 bank and ID code, then the SoC.
SOC_STEP_PERCENT = {"jep106:036b:0241": 5}


def soc_processor_steps(fs: Sysfs) -> ProcessorSteps:
    """The steps a kernel that asks the SoC takes here: acpi_thermal_cpufreq_config sets
    the SoC's percentage and max_step = 100 / percent - 2; PROCESSOR_STEPS on any other
    SoC (and where sysfs shows none, as x86 does)."""
    for name in _numbered(fs, "soc", "devices"):
        percent = SOC_STEP_PERCENT.get(fs.read_opt(f"devices/{name}/soc_id") or "")
        if percent is not None:
            return ProcessorSteps(percent, 100 // percent - 2)
    return PROCESSOR_STEPS


def _kernel_steps(soc: ProcessorSteps, max_state: Optional[int]) -> ProcessorSteps:
    """``soc`` (soc_processor_steps) when the running kernel takes them: a device's
    max_state is its cpufreq steps plus its T-states (acpi_processor_max_state), so one
    below soc.max_step is a kernel before acpi_arch_thermal_cpufreq_pctg, with the default
    steps. With max_state unknown, the default steps too: processor_thermal.c's own."""
    if max_state is not None and max_state >= soc.max_step:
        return soc
    return PROCESSOR_STEPS


@dataclass(frozen=True)
class CoolingDevice:
    name: str
    type: Optional[str]
    cur_state: Optional[int]
    max_state: Optional[int]
    #: A Processor device's CPUs: those of its own CPU's physical package, which its state
    #: caps. None for other types, and when sysfs does not tell (then it may cap any CPU).
    cpus: Optional[tuple[int, ...]] = None
    #: A Processor device's cpufreq steps; None for other types.
    steps: Optional[ProcessorSteps] = None

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
    fs: Sysfs,
    name: str,
    packages: Optional[Mapping[int, int]] = None,
    soc: Optional[ProcessorSteps] = None,
) -> CoolingDevice:
    """``packages`` is cpu_packages(fs) and ``soc`` soc_processor_steps(fs), read here when
    not given and needed."""
    base = f"{THERMAL}/{name}"
    cdev_type = fs.read_opt(f"{base}/type")
    max_state = fs.read_int_opt(f"{base}/max_state")
    cpus = steps = None
    if cdev_type == ACPI_PROCESSOR:
        cpus = _processor_cpus(fs, base, cpu_packages(fs) if packages is None else packages)
        steps = _kernel_steps(soc_processor_steps(fs) if soc is None else soc, max_state)
    return CoolingDevice(name, cdev_type, fs.read_int_opt(f"{base}/cur_state"), max_state,
                         cpus, steps)


def discover_cooling_devices(fs: Sysfs) -> list[CoolingDevice]:
    """The cooling_deviceN entries in N order; [] where the kernel has none (or no
    class/thermal at all)."""
    names = _numbered(fs, "cooling_device")
    packages = cpu_packages(fs) if names else {}
    soc = soc_processor_steps(fs) if names else PROCESSOR_STEPS
    return [read_cooling_device(fs, n, packages, soc) for n in names]


@dataclass(frozen=True)
class ThermalCap:
    """A cooling device throttling a cpufreq policy or a devfreq device now, and the
    ceiling its state sets, in the unit of what it caps (kHz for a policy, Hz for devfreq;
    None when the table it steps through is not known)."""

    device: CoolingDevice
    freq: Optional[int]


def state_ceiling(table: Sequence[int], state: int, max_state: Optional[int]) -> Optional[int]:
    """The ceiling of cooling state ``state`` over an ascending frequency ``table``: state 0
    the highest frequency, each state one lower (cpufreq_cooling.c get_state_freq;
    devfreq_cooling.c freq_table "sorted in descending order ... indexed by cooling device
    state", or its Energy Model's perf_idx = max_state - state). None when the table is
    unknown or its length is not max_state + 1 (an Energy Model table of its own)."""
    if max_state is None or len(table) != max_state + 1 or not 0 <= state <= max_state:
        return None
    return table[max_state - state]


def lowest_cap(caps: Iterable[ThermalCap]) -> Optional[ThermalCap]:
    """The cap with the lowest ceiling (an unknown one lowest of all), if any: where the
    effective max is when a cap binds, all max requests being aggregated to the lowest."""
    return min(caps, key=lambda cap: -1 if cap.freq is None else cap.freq, default=None)


def _binds(cap: ThermalCap, freq: int) -> bool:
    """Whether an effective max read as ``freq`` is at the cap (at or above its frequency;
    any when that is unknown) rather than at a lower request, the user's."""
    return cap.freq is None or freq >= cap.freq


def unthrottled_max(read: int, top: Optional[int], cap: ThermalCap) -> Optional[int]:
    """What a max limit read as ``read`` while ``cap`` throttles stands for when the read is
    the cap's doing: ``top``, what it reads without a user limit. None when the read is the
    board's own (below the cap's frequency: a lower request binds, the user's)."""
    return top if top is not None and read < top and _binds(cap, read) else None


def unthrottled_min(
    read: int, bottom: Optional[int], ceiling: Optional[int], cap: ThermalCap
) -> Optional[int]:
    """What a min limit read as ``read`` stands for when the kernel clamped it to a max that
    ``cap`` holds (``ceiling``, the max as read before any write of this daemon's): the
    user's floor is above the cap and cannot be read back, and ``bottom``, what it reads
    without a user floor, costs no power after the device cooled, where a floor at the
    cap would hold it up for good. None when the read is the board's own."""
    clamped = ceiling is not None and read >= ceiling and _binds(cap, ceiling)
    return bottom if bottom is not None and read > bottom and clamped else None


def zone_by_type(zones: list[ThermalZone], zone_type: str) -> Optional[ThermalZone]:
    for zone in zones:
        if zone.type == zone_type:
            return zone
    return None
