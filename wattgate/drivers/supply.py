"""power_supply: batteries and mains, read only.

``class/power_supply/<name>/`` (REFERENCE.md): ``type``, ``online``, ``status``,
``capacity`` (%), ``power_now`` (µW) or ``voltage_now`` (µV) × ``current_now``
(µA), ``energy_now`` (µWh).

An attribute the driver does not have is no reading; one it has that fails (an I2C fuel
gauge's EIO, ENODEV while the battery is being removed) or reads as garbage is also no
reading, and is named in ``Supply.error``: the caller must be able to tell "cannot be
read now" from "nothing to read", since only the first is a reason to keep what it last knew.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, TypeVar

from wattgate.drivers.sysfs import AttributeMissing, Sysfs, SysfsError

POWER_SUPPLY = "class/power_supply"
T = TypeVar("T")


@dataclass(frozen=True)
class Supply:
    name: str
    type: Optional[str]
    online: Optional[bool]
    status: Optional[str]
    capacity_percent: Optional[int]
    watts: Optional[float]
    energy_wh: Optional[float]
    error: Optional[str] = None  # the first of type/online/status/capacity that failed
    scope: Optional[str] = None  # "System", "Device" (a peripheral's), "Unknown" or absent
    # its size, to weigh its capacity by: energy_full (µWh) or charge_full (µAh), in Wh/Ah
    full: Optional[tuple[str, float]] = None  # ("Wh", 57.0) or ("Ah", 3.9)

    @property
    def is_battery(self) -> bool:
        """The machine's own battery. A mouse's, keyboard's or pen's (hid-generic, wacom:
        ``scope`` "Device") is a power_supply of type Battery too, but it neither powers the
        board nor says whether the board is on battery."""
        return self.type == "Battery" and self.scope != "Device"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Documentation/ABI/testing/sysfs-class-power: every value ``status`` can take. Anything
# else (a driver's garbage, bytes that are not text) is a failed read: taken as a status,
# it told a battery-only board it was not discharging.
STATUSES = frozenset({"Unknown", "Charging", "Discharging", "Not charging", "Full"})
# The `type`s of sysfs-class-power that bring power from outside: every one but Battery,
# UPS (a battery of its own) and Unknown. Mains, USB and USB_PD alone left a laptop charged
# through USB_C (cros-usbpd-charger), a USB_DCP or a wireless charger "on battery".
EXTERNAL = frozenset({"Mains", "USB", "USB_DCP", "USB_CDP", "USB_ACA", "USB_C", "USB_PD",
                      "USB_PD_DRP", "BrickID", "Wireless"})


class Reader:
    """Reads one device's attributes, remembering the first that exists and fails: an
    attribute the driver does not have is None and no error (see the module docstring)."""

    def __init__(self, fs: Sysfs, base: str) -> None:
        self.fs = fs
        self.base = base
        self.error: Optional[str] = None
        self.errnos: set[int] = set()  # of every attribute that failed

    def _read(self, read: Callable[[str], T], name: str) -> Optional[T]:
        try:
            return read(f"{self.base}/{name}")
        except AttributeMissing:
            return None
        except SysfsError as exc:
            self.error = self.error or str(exc)
            self.errnos.add(exc.errno or 0)
            return None

    def text(self, name: str) -> Optional[str]:
        return self._read(self.fs.read, name)

    def int(self, name: str) -> Optional[int]:
        return self._read(self.fs.read_int, name)

    def status(self) -> Optional[str]:
        text = self.text("status")
        if text is None or text in STATUSES:
            return text
        self.error = self.error or f"status: not a power_supply status: {text[:32]!r}"
        return None


def _capacity(value: Optional[int]) -> Optional[int]:
    """Percent, or None outside 0..100, the range sysfs-class-power gives it: a fuel gauge
    not calibrated yet can print -1 or 255, and -1 % held a battery_below rule on."""
    return value if value is not None and 0 <= value <= 100 else None


def read_supply(fs: Sysfs, name: str) -> Supply:
    base = f"{POWER_SUPPLY}/{name}"
    checked = Reader(fs, base)  # what the rules depend on; a failure there is an error
    online = checked.int("online")
    kind, status = checked.text("type"), checked.status()
    capacity = checked.int("capacity")
    if capacity is not None and _capacity(capacity) is None:
        checked.error = checked.error or f"capacity: {capacity} is not a percent (0..100)"
    power_uw = fs.read_int_opt(f"{base}/power_now")
    if power_uw is None:
        uv = fs.read_int_opt(f"{base}/voltage_now")
        ua = fs.read_int_opt(f"{base}/current_now")
        watts = None if uv is None or ua is None else abs(uv * ua) / 1e12
    else:
        watts = abs(power_uw) / 1e6
    energy = fs.read_int_opt(f"{base}/energy_now")
    energy_full = fs.read_int_opt(f"{base}/energy_full")
    charge_full = None if energy_full else fs.read_int_opt(f"{base}/charge_full")
    full = (("Wh", energy_full / 1e6) if energy_full else
            ("Ah", charge_full / 1e6) if charge_full else None)
    return Supply(
        name=name,
        type=kind,
        online=None if online is None else online != 0,
        status=status,
        capacity_percent=_capacity(capacity),
        watts=watts,
        energy_wh=None if energy is None else energy / 1e6,
        error=checked.error,
        scope=fs.read_opt(f"{base}/scope"),
        full=full,
    )


def discover_supplies(fs: Sysfs) -> list[Supply]:
    return [read_supply(fs, n) for n in fs.listdir(POWER_SUPPLY)]


def may_be_battery(s: Supply) -> bool:
    """A supply that is not known to be no battery of the machine's: its type does not read
    or says nothing ("Unknown"), or it is a UPS (a battery of its own)."""
    return s.is_battery or s.type in (None, "Unknown", "UPS")


def on_battery(supplies: list[Supply], battery_unread: bool = False) -> Optional[bool]:
    """True when a battery exists and no external supply is online; None if unknown.

    No battery at all is not on battery: an RK3588 or i.MX8MP on a DC barrel jack lists no
    power_supply, and taken as unknown it never held an "on mains" rule. Unknown is what
    could still be a battery running the board: a supply whose type does not read, or says
    Unknown or UPS; one the caller knows of but that is not in `supplies`
    (`battery_unread`: its read has not answered, or a battery seen before went away); a
    battery whose status tells nothing with no external supply to tell instead.

    A mains/USB supply online is on mains whether a battery is listed or not: a board with
    no battery, or whose fuel gauge went away (an unbound driver, an I2C error), was
    "unknown" however plainly the mains was online, and an on_battery rule stayed held."""
    batteries = [s for s in supplies if s.is_battery]
    external = [s for s in supplies if s.type in EXTERNAL and s.online is not None]
    if not batteries:
        if any(s.online for s in external):
            return False
        return None if battery_unread or any(map(may_be_battery, supplies)) else False
    if external:
        return not any(s.online for s in external)
    # "Unknown" tells nothing: taken as not discharging, it let on_battery rules go.
    statuses = {s.status for s in batteries} - {None, "Unknown"}
    return "Discharging" in statuses if statuses else None


def combined_percent(batteries: list[Supply]) -> Optional[float]:
    """The charge left in all the batteries (a ThinkPad's BAT0 and BAT1, a UPS HAT beside
    a gauge), as one percent: each weighed by its size when all tell it in one unit, else
    the plain mean. None when one cannot tell: the rules then hold, as for one battery.
    The first battery alone said 97 % while the one in use was at 8 %."""
    percents = [b.capacity_percent for b in batteries if b.capacity_percent is not None]
    if not batteries or len(percents) < len(batteries):
        return None
    if len(percents) == 1:
        return float(percents[0])
    units = {b.full[0] for b in batteries if b.full is not None}
    if len(units) == 1 and all(b.full is not None for b in batteries):
        sizes = [b.full[1] for b in batteries if b.full is not None]
    else:
        sizes = [1.0] * len(batteries)
    return sum(p * w for p, w in zip(percents, sizes)) / sum(sizes)
