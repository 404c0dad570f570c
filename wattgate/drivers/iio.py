"""IIO ambient sensors: illuminance and temperature, read only.

``bus/iio/devices/iio:deviceN/``: a processed ``*_input`` when the driver offers
one, else ``(raw + offset) * scale`` (Documentation/ABI/testing/sysfs-bus-iio). A channel
may be indexed (isl29018, tsl2563: ``in_illuminance0_input``), and its scale and offset
its own (``in_illuminance0_scale``) or shared by its type (``in_illuminance_scale``).
Illuminance is in lux; temperature in millidegrees Celsius.

A reading that cannot be trusted is no reading (None), never a guess: an ``_offset`` or
``_scale`` that exists but does not read as a number, a temperature below absolute zero.
Lux below zero is darkness seen through a calibration offset and reads as 0. Which devices
are sensors is told by the attributes they have, not by whether they answer right now, so a
sensor that fails one read (EIO while it powers up) is still polled.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Optional

from wattgate.drivers.sysfs import Sysfs
from wattgate.drivers.thermal import ABSOLUTE_ZERO_MC

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


def _float_or(fs: Sysfs, attribute: str, default: float) -> Optional[float]:
    """An optional attribute: `default` when the driver has none, None when it has one that
    does not read as a finite number. Taking an unreadable scale for a missing one (1.0)
    published a bh1750's raw count 240 as 240 lx, not 200."""
    if not fs.exists(attribute):
        return default
    return _float(fs, attribute)


def _channel_name(fs: Sysfs, base: str, kind: str) -> Optional[str]:
    """The attributes' prefix of the device's ``kind`` channel (e.g. "in_illuminance"): the
    channel itself, else its lowest index ("in_illuminance0"); None when it has neither.
    Looking for the unindexed name only, light = "auto" found no isl29018 or tsl2563."""
    names = fs.listdir(base)
    if f"{kind}_input" in names or f"{kind}_raw" in names:
        return kind
    pattern = re.compile(rf"{re.escape(kind)}(\d+)_(?:input|raw)")
    indexes = sorted(int(m.group(1)) for m in map(pattern.fullmatch, names) if m)
    return f"{kind}{indexes[0]}" if indexes else None


def _info(fs: Sysfs, base: str, channel: str, kind: str, what: str) -> str:
    """The channel's own ``_scale``/``_offset`` attribute, else the one its type shares."""
    own = f"{base}/{channel}_{what}"
    return own if fs.exists(own) else f"{base}/{kind}_{what}"


def _channel(fs: Sysfs, base: str, kind: str) -> Optional[float]:
    channel = _channel_name(fs, base, kind)
    if channel is None:
        return None
    processed = _float(fs, f"{base}/{channel}_input")
    if processed is not None:
        return processed
    raw = _float(fs, f"{base}/{channel}_raw")
    if raw is None:
        return None
    offset = _float_or(fs, _info(fs, base, channel, kind, "offset"), 0.0)
    scale = _float_or(fs, _info(fs, base, channel, kind, "scale"), 1.0)
    if offset is None or scale is None:
        return None
    value = (raw + offset) * scale
    return value if math.isfinite(value) else None


def has_channel(fs: Sysfs, name: str, kind: str) -> bool:
    """The device offers the channel (``kind`` e.g. "in_illuminance"), readable or not."""
    return _channel_name(fs, f"{IIO}/{name}", kind) is not None


def illuminance_sensors(fs: Sysfs) -> list[str]:
    """IIO devices with an illuminance channel, in name order, whether or not they read now."""
    return [n for n in fs.listdir(IIO) if has_channel(fs, n, "in_illuminance")]


def read_lux(fs: Sysfs, name: str) -> Optional[float]:
    """The device's illuminance alone: the power rules' light reading, which has no use for
    its other channels."""
    lux = _channel(fs, f"{IIO}/{name}", "in_illuminance")
    # Below 0 lx: darkness read through a sensor's calibration offset, 0 lx as the lighting
    # policy compares it. Dropped as no reading, a dark room showed a sensor error all night.
    return None if lux is None else max(0.0, lux)


def read_sensor(fs: Sysfs, name: str) -> Optional[IioSensor]:
    base = f"{IIO}/{name}"
    lux = read_lux(fs, name)
    temp_mc = _channel(fs, base, "in_temp")
    if temp_mc is not None and temp_mc < ABSOLUTE_ZERO_MC:
        temp_mc = None
    if lux is None and temp_mc is None:
        return None
    return IioSensor(
        name, fs.read_opt(f"{base}/name"), lux, None if temp_mc is None else temp_mc / 1000.0
    )


def discover_sensors(fs: Sysfs) -> list[IioSensor]:
    return [s for s in (read_sensor(fs, n) for n in fs.listdir(IIO)) if s is not None]
