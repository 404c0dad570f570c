"""power_supply: batteries and mains, read only.

``class/power_supply/<name>/`` (REFERENCE.md): ``type``, ``online``, ``status``,
``capacity`` (%), ``power_now`` (µW) or ``voltage_now`` (µV) × ``current_now``
(µA), ``energy_now`` (µWh).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from wattgate.drivers.sysfs import Sysfs

POWER_SUPPLY = "class/power_supply"


@dataclass(frozen=True)
class Supply:
    name: str
    type: Optional[str]
    online: Optional[bool]
    status: Optional[str]
    capacity_percent: Optional[int]
    watts: Optional[float]
    energy_wh: Optional[float]

    @property
    def is_battery(self) -> bool:
        return self.type == "Battery"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _capacity(fs: Sysfs, attribute: str) -> Optional[int]:
    """Percent, or None outside 0..100, the range sysfs-class-power gives it: a fuel gauge
    not calibrated yet can print -1 or 255, and -1 % held a battery_below rule on."""
    value = fs.read_int_opt(attribute)
    return value if value is not None and 0 <= value <= 100 else None


def read_supply(fs: Sysfs, name: str) -> Supply:
    base = f"{POWER_SUPPLY}/{name}"
    online = fs.read_int_opt(f"{base}/online")
    power_uw = fs.read_int_opt(f"{base}/power_now")
    if power_uw is None:
        uv = fs.read_int_opt(f"{base}/voltage_now")
        ua = fs.read_int_opt(f"{base}/current_now")
        watts = None if uv is None or ua is None else abs(uv * ua) / 1e12
    else:
        watts = abs(power_uw) / 1e6
    energy = fs.read_int_opt(f"{base}/energy_now")
    return Supply(
        name=name,
        type=fs.read_opt(f"{base}/type"),
        online=None if online is None else online != 0,
        status=fs.read_opt(f"{base}/status"),
        capacity_percent=_capacity(fs, f"{base}/capacity"),
        watts=watts,
        energy_wh=None if energy is None else energy / 1e6,
    )


def discover_supplies(fs: Sysfs) -> list[Supply]:
    return [read_supply(fs, n) for n in fs.listdir(POWER_SUPPLY)]


def on_battery(supplies: list[Supply]) -> Optional[bool]:
    """True when a battery exists and no mains/USB supply is online; None if unknown."""
    batteries = [s for s in supplies if s.is_battery]
    external = [
        s for s in supplies if s.type in ("Mains", "USB", "USB_PD") and s.online is not None
    ]
    if not batteries:
        return None
    if external:
        return not any(s.online for s in external)
    statuses = {s.status for s in batteries}
    return "Discharging" in statuses if statuses - {None} else None
