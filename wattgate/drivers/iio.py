"""IIO ambient sensors: illuminance and temperature, read only.

``bus/iio/devices/iio:deviceN/``: a processed ``*_input`` when the driver offers
one, else ``(raw + offset) * scale`` (Documentation/ABI/testing/sysfs-bus-iio).
Illuminance is in lux; temperature in millidegrees Celsius.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from wattgate.drivers.sysfs import Sysfs

IIO = "bus/iio/devices"


@dataclass(frozen=True)
class IioSensor:
    name: str
    chip: Optional[str]
    lux: Optional[float]
    celsius: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _float(fs: Sysfs, attribute: str) -> Optional[float]:
    """The attribute as a finite number; None when absent or not one (nan, inf: no kernel
    driver prints them, a broken or fake one might)."""
    text = fs.read_opt(attribute)
    try:
        value = None if text is None else float(text)
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _channel(fs: Sysfs, base: str, prefix: str) -> Optional[float]:
    processed = _float(fs, f"{base}/{prefix}_input")
    if processed is not None:
        return processed
    raw = _float(fs, f"{base}/{prefix}_raw")
    if raw is None:
        return None
    offset = _float(fs, f"{base}/{prefix}_offset") or 0.0
    scale = _float(fs, f"{base}/{prefix}_scale")
    value = (raw + offset) * (1.0 if scale is None else scale)
    return value if math.isfinite(value) else None


def read_sensor(fs: Sysfs, name: str) -> Optional[IioSensor]:
    base = f"{IIO}/{name}"
    lux = _channel(fs, base, "in_illuminance")
    temp_mc = _channel(fs, base, "in_temp")
    if lux is None and temp_mc is None:
        return None
    return IioSensor(
        name, fs.read_opt(f"{base}/name"), lux, None if temp_mc is None else temp_mc / 1000.0
    )


def discover_sensors(fs: Sysfs) -> list[IioSensor]:
    return [s for s in (read_sensor(fs, n) for n in fs.listdir(IIO)) if s is not None]
