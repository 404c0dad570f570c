"""Power meters: hwmon rails (ina2xx, ina3221), powercap RAPL energy, Jetson IIO rails.

Units (REFERENCE.md): hwmon ``power*_input`` µW, ``in*_input`` mV,
``curr*_input`` mA; RAPL ``energy_uj`` µJ wrapping at ``max_energy_range_uj``;
JetPack 4 IIO ``in_power*_input`` mW. This module reads no clock: RAPL power
comes from two samples whose timestamps the caller supplies.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from wattgate.drivers.supply import Reader
from wattgate.drivers.sysfs import Sysfs

HWMON = "class/hwmon"
POWERCAP = "class/powercap"
# More than any RAPL domain draws (server sockets' limits are a few hundred W): a counter
# that says more in an interval was reset, it did not wrap.
RAPL_MAX_W = 1000.0

# hwmon drivers whose power is a processor package's, not a board rail's, in the order of
# how much of the package they cover (an APU's amdgpu PPT has its CPU's zenpower rails in it):
# * amdgpu: power1_average / power1_input labelled "PPT", the APU's socket power from the SMU;
#   on Van Gogh (GC 10.3.1) power1 is "slowPPT" and power2_average "fastPPT", the same
#   package over a shorter window. Only APUs have in1 "vddnb"
#   (drivers/gpu/drm/amd/pm/amdgpu_pm.c: amdgpu_hwmon_show_power_label,
#   hwmon_attributes_visible); on a discrete card PPT is the card's.
# * zenpower (out of tree): power1_input "SVI2_P_Core" and power2_input "SVI2_P_SoC", the
#   two supplies of the CPU package.
# * fam15h_power: power1_input is the whole package's (Documentation/hwmon/fam15h_power.rst).
# amd_energy (removed in Linux 5.13) has energy*_input counters only: never a rail here.
PACKAGE_CHIPS = ("amdgpu", "zenpower", "fam15h_power")
Scope = Literal["board", "package", "device"]


@dataclass(frozen=True)
class Rail:
    label: str
    volts: Optional[float]
    amps: Optional[float]
    watts: Optional[float]
    error: Optional[str] = None  # the first of its readings that is there and failed

    @property
    def unread(self) -> bool:
        """It has no watts now because a reading failed (an I2C chip's EIO, EAGAIN), not
        because it cannot tell: its share of the board is unknown, not nothing."""
        return self.watts is None and self.error is not None


@dataclass(frozen=True)
class Meter:
    name: str  # hwmon or iio directory name
    chip: str  # driver name: ina3221, ina226, ...
    path: str
    rails: tuple[Rail, ...]
    # "board": rails of the board's supply, summed for its watts. "package": a processor
    # package's power (PACKAGE_CHIPS), a part of what those rails carry, like RAPL's package
    # zone. "device": one device's own power (a discrete GPU card), neither.
    scope: Scope = "board"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _channels(entries: list[str], prefix: str, suffix: str) -> set[int]:
    found = set()
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(suffix):
            middle = entry[len(prefix) : len(entry) - len(suffix)]
            if middle.isdigit():
                found.add(int(middle))
    return found


def _scope(fs: Sysfs, base: str, chip: str) -> Scope:
    if chip not in PACKAGE_CHIPS:
        return "board"
    if chip == "amdgpu" and fs.read_opt(f"{base}/in1_label") != "vddnb":
        return "device"  # a discrete card: only APUs have vddnb (see PACKAGE_CHIPS)
    return "package"


def _board_rail(fs: Sysfs, base: str, chip: str, ch: int) -> Optional[Rail]:
    """A rail's readings; None for an INA3221 channel that is disabled ("NC" in the device
    tree, or in{ch}_enable 0), to which the driver answers ENODATA: taken for a rail that
    failed its read, it left an AGX Orin's board (an INA3221 with two NC channels) with no
    measured watts at all."""
    if chip == "ina3221" and fs.read_opt(f"{base}/in{ch}_enable") == "0":
        return None
    label = (
        fs.read_opt(f"{base}/in{ch}_label")
        or fs.read_opt(f"{base}/power{ch}_label")
        or fs.read_opt(f"{base}/curr{ch}_label")
        or f"{chip}:{ch}"
    )
    read = Reader(fs, base)
    mv, ma, uw = (read.int(f"{kind}{ch}_input") for kind in ("in", "curr", "power"))
    volts = None if mv is None else mv / 1000.0
    amps = None if ma is None else ma / 1000.0
    if uw is not None:
        watts: Optional[float] = uw / 1e6
    elif volts is not None and amps is not None:
        watts = volts * amps
    else:
        watts = None
    if chip == "ina3221" and read.errnos == {errno.ENODATA}:
        return None
    return Rail(label, volts, amps, watts, read.error)


def _power_rail(fs: Sysfs, base: str, chip: str, ch: int) -> Rail:
    """A package sensor's power channel, the average before the instant: read once a tick,
    the SMU's average over its window is nearer the tick's energy. Its in{ch} is no voltage
    of it (amdgpu's in1 is vddnb), so power alone, labelled by power{ch}_label."""
    read = Reader(fs, base)
    uw = read.int(f"power{ch}_average")
    if uw is None:
        uw = read.int(f"power{ch}_input")
    label = fs.read_opt(f"{base}/power{ch}_label") or f"{chip}:{ch}"
    return Rail(label, None, None, None if uw is None else uw / 1e6, read.error)


def read_hwmon(fs: Sysfs, name: str) -> Optional[Meter]:
    """A hwmon device's rails, None when it measures no current or power."""
    base = f"{HWMON}/{name}"
    entries = fs.listdir(base)
    chip = fs.read_opt(f"{base}/name") or name
    scope = _scope(fs, base, chip)
    if scope == "board":
        channels = _channels(entries, "curr", "_input") | _channels(entries, "power", "_input")
        if chip == "ina3221":
            # curr4/in7 are the summation channel and in4..in6 the shunt voltages
            # (Documentation/hwmon/ina3221.rst): only 1..3 are rails.
            channels = {c for c in channels if c <= 3}
        found = (_board_rail(fs, base, chip, ch) for ch in sorted(channels))
        rails = [rail for rail in found if rail is not None]
    else:
        channels = _channels(entries, "power", "_input") | _channels(entries, "power", "_average")
        if chip == "amdgpu":
            channels &= {1}  # power2 (fastPPT) is power1's package over a shorter window
        rails = [_power_rail(fs, base, chip, ch) for ch in sorted(channels)]
    if not rails:
        return None
    return Meter(name, chip, fs.resolve(base), tuple(rails), scope)


def read_iio_rails(fs: Sysfs, name: str) -> Optional[Meter]:
    """JetPack 4 INA3221 under IIO: ``rail_name_N`` and ``in_power N _input`` (mW)."""
    base = f"bus/iio/devices/{name}"
    entries = fs.listdir(base)
    rails = []
    for ch in sorted(_channels(entries, "rail_name_", "")):
        label = fs.read_opt(f"{base}/rail_name_{ch}") or f"rail{ch}"
        read = Reader(fs, base)
        mw, mv, ma = (read.int(f"in_{kind}{ch}_input") for kind in ("power", "voltage", "current"))
        rails.append(
            Rail(
                label,
                None if mv is None else mv / 1000.0,
                None if ma is None else ma / 1000.0,
                None if mw is None else mw / 1000.0,
                read.error,
            )
        )
    if not rails:
        return None
    return Meter(name, fs.read_opt(f"{base}/name") or "iio", fs.resolve(base), tuple(rails))


def discover_meters(fs: Sysfs) -> list[Meter]:
    meters = [m for m in (read_hwmon(fs, n) for n in fs.listdir(HWMON)) if m is not None]
    for name in fs.listdir("bus/iio/devices"):
        meter = read_iio_rails(fs, name)
        if meter is not None:
            meters.append(meter)
    return meters


def rail_watts(meters: list[Meter]) -> dict[str, float]:
    """Watts per board rail label over every meter that can tell."""
    return {r.label: r.watts for m in meters if m.scope == "board" for r in m.rails
            if r.watts is not None}


def package_meter(meters: list[Meter]) -> Optional[Meter]:
    """The hwmon meter of the processor package, the one covering most of it when two do
    (PACKAGE_CHIPS); None without one. Its watts are the sum of its rails."""
    found = [m for m in meters if m.scope == "package"]
    return min(found, key=lambda m: PACKAGE_CHIPS.index(m.chip), default=None)


@dataclass(frozen=True)
class EnergyZone:
    """A powercap zone (RAPL package, core, uncore, psys)."""

    zone: str  # intel-rapl:0, intel-rapl:0:0 ...
    name: str  # package-0, core, uncore, psys
    energy_uj: Optional[int]
    max_energy_range_uj: Optional[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_energy(fs: Sysfs, zone: str) -> Optional[EnergyZone]:
    """A powercap zone's counter; None for the control-type directory (intel-rapl), which
    has none."""
    base = f"{POWERCAP}/{zone}"
    if not fs.exists(f"{base}/energy_uj"):
        return None
    return EnergyZone(
        zone=zone,
        name=fs.read_opt(f"{base}/name") or zone,
        energy_uj=fs.read_int_opt(f"{base}/energy_uj"),
        max_energy_range_uj=fs.read_int_opt(f"{base}/max_energy_range_uj"),
    )


def discover_energy(fs: Sysfs) -> list[EnergyZone]:
    return [z for z in (read_energy(fs, n) for n in fs.listdir(POWERCAP)) if z is not None]


def board_energy_zone(zones: list[EnergyZone]) -> Optional[EnergyZone]:
    """The zone the board's watts are measured by: psys (the platform), else package-0,
    passing over a zone whose counter does not read. Since Linux 5.10 (CVE-2020-8694)
    energy_uj is mode 0400, root's (drivers/powercap/powercap_sys.c): a grant may cover the
    package zone and not psys, and an EACCES psys hid a package counter that reads."""
    readable = {z.name: z for z in zones if z.energy_uj is not None}
    return readable.get("psys") or readable.get("package-0")


def energy_delta_uj(
    before: int, after: int, max_range_uj: Optional[int], limit_uj: Optional[float] = None
) -> Optional[int]:
    """Energy used between two counter readings, across one wraparound.

    None when the counter went back and no ``max_energy_range_uj`` (or one the first reading
    already exceeds) says where it wraps: a reset cannot be told from a wrap then, and the
    plain difference was a negative energy, published as negative watts. None as well when
    the energy is above `limit_uj`, the most the interval can have used: a counter that
    restarted (its zone registered again) reads near 0, and taken for a wrap from anywhere
    below the top of its range it was one interval of kilowatts."""
    if after >= before:
        delta = after - before
    elif not max_range_uj or before > max_range_uj:
        return None
    else:
        delta = after + (max_range_uj - before)
    return None if limit_uj is not None and delta > limit_uj else delta


def average_watts(
    before_uj: int, before_s: float, after_uj: int, after_s: float, max_range_uj: Optional[int]
) -> Optional[float]:
    """Mean power between two samples taken at the caller's timestamps (seconds); None
    when the counter says more than RAPL_MAX_W, which only a reset does."""
    elapsed = after_s - before_s
    if elapsed <= 0:
        return None
    delta = energy_delta_uj(before_uj, after_uj, max_range_uj, RAPL_MAX_W * 1e6 * elapsed)
    return None if delta is None else delta / 1e6 / elapsed
