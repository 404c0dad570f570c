"""What the power controller reads once a tick: temperatures, supplies, light, meters,
current clocks and CPU utilisation.

Read outside the controller's lock, since sysfs reads can block in a driver; the result is
plain data. The meter and CPU counters are differences between two ticks, so the reader
keeps the previous sample.

A battery that was seen and cannot be read now (its node gone, an attribute failing) is
shown as such: ``battery`` keeps its name with an ``error``, logged once when it starts and
once when it ends, and its readings are None (unknown) for the rules to hold on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from wattgate.drivers.cpufreq import CpuPolicy
from wattgate.drivers.iio import discover_sensors
from wattgate.drivers.meters import average_watts, discover_energy, discover_meters
from wattgate.drivers.supply import Supply, discover_supplies, on_battery
from wattgate.drivers.sysfs import Sysfs
from wattgate.drivers.thermal import discover_zones
from wattgate.policies.rules import Readings

log = logging.getLogger("wattgate.power")

INPUT_RAILS = ("VDD_IN", "VIN", "IN")  # a meter rail that measures the whole board


@dataclass
class Inputs:
    """One tick's readings."""

    readings: Readings = field(default_factory=Readings)
    temps: dict[str, float] = field(default_factory=dict)  # zone type -> °C
    battery: Optional[dict[str, Any]] = None
    meter_w: Optional[float] = None
    meter_source: Optional[str] = None
    cpu_khz: dict[str, Optional[int]] = field(default_factory=dict)  # policy -> cur freq
    cpu_busy: dict[str, float] = field(default_factory=dict)  # policy -> CPU-s per s
    cpu_peak: Optional[float] = None  # busiest CPU, percent
    npu_hz: Optional[int] = None
    npu_status: Optional[str] = None  # runtime_status


class InputReader:
    def __init__(
        self,
        fs: Sysfs,
        policies: dict[str, CpuPolicy],
        npu_devfreq: Optional[str] = None,  # class/devfreq/NAME
        npu_device: Optional[str] = None,
    ) -> None:
        self.fs = fs
        self.policies = policies
        self.npu_devfreq = npu_devfreq
        self.npu_device = npu_device
        self._rapl: Optional[tuple[int, float, Optional[int]]] = None
        self._cpu_prev: Optional[Any] = None
        self._battery_name: Optional[str] = None  # the battery last seen
        self._battery_error: Optional[str] = None  # logged when it began

    def read(self, now: float) -> Inputs:
        fs = self.fs
        inputs = Inputs()
        for zone in discover_zones(fs):
            if zone.celsius is not None:  # zones may share a type (acpitz): the hottest
                key = zone.type or zone.name
                inputs.temps[key] = max(zone.celsius, inputs.temps.get(key, zone.celsius))
        supplies = discover_supplies(fs)
        battery = next((s for s in supplies if s.is_battery), None)
        discharging = on_battery(supplies)
        lux = next((s.lux for s in discover_sensors(fs) if s.lux is not None), None)
        percent = None if battery is None or battery.capacity_percent is None else float(
            battery.capacity_percent)
        inputs.readings = Readings(discharging, percent, inputs.temps, lux)
        inputs.battery = self._battery(supplies, battery, discharging)
        inputs.meter_w, inputs.meter_source = self._measure(now, battery, discharging)
        for path, policy in self.policies.items():
            inputs.cpu_khz[policy.name] = fs.read_int_opt(f"{path}/scaling_cur_freq")
        inputs.cpu_busy, inputs.cpu_peak = self._cpu_busy()
        if self.npu_devfreq is not None:
            inputs.npu_hz = fs.read_int_opt(f"{self.npu_devfreq}/cur_freq")
        if self.npu_device is not None:
            inputs.npu_status = fs.read_opt(f"{self.npu_device}/power/runtime_status")
        return inputs

    def _battery(
        self, supplies: list[Supply], battery: Optional[Supply], discharging: Optional[bool]
    ) -> Optional[dict[str, Any]]:
        """The battery for status, with an error while the one seen before cannot be read."""
        if battery is None and self._battery_name is None:
            return None  # no battery, ever
        if battery is None:  # its node is gone, or even its type does not read
            left = next((s for s in supplies if s.name == self._battery_name), None)
            error: Optional[str] = left.error if left is not None and left.error else "gone"
            out: dict[str, Any] = {"name": self._battery_name}
        else:
            self._battery_name, error = battery.name, battery.error
            out = {"name": battery.name, "percent": battery.capacity_percent,
                   "status": battery.status, "on_battery": discharging, "watts": battery.watts}
        if error != self._battery_error:
            if error is not None:
                log.warning("battery %s cannot be read (%s): its rules keep their state until "
                            "it reads again", out["name"], error)
            else:
                log.info("battery %s reads again", out["name"])
            self._battery_error = error
        if error is not None:
            out["error"] = error
        return out

    def _measure(
        self, now: float, battery: Optional[Supply], discharging: Optional[bool]
    ) -> tuple[Optional[float], Optional[str]]:
        """Measured board watts: an input rail, else RAPL, else the discharging battery."""
        rails = [(r.label, r.watts) for m in discover_meters(self.fs) for r in m.rails
                 if r.watts is not None]
        for label in INPUT_RAILS:
            watts = next((w for name, w in rails if name == label), None)
            if watts is not None:
                return watts, f"hwmon {label}"
        if rails:
            # Every rail (two unlabelled chips both have an "ina226:1"); one reading below
            # 0 W (noise at no load, a shunt wired the other way) draws nothing from the
            # board, and counted it made the board's watts low or even negative.
            return sum(max(0.0, w) for _, w in rails), "hwmon rails"
        zones = {z.name: z for z in discover_energy(self.fs)}
        zone = zones.get("psys") or zones.get("package-0")
        if zone is not None and zone.energy_uj is not None:
            prev, self._rapl = self._rapl, (zone.energy_uj, now, zone.max_energy_range_uj)
            if prev is not None:
                avg = average_watts(prev[0], prev[1], zone.energy_uj, now, prev[2])
                if avg is not None:
                    return avg, f"RAPL {zone.name}"
            return None, None
        if discharging and battery is not None and battery.watts is not None:
            return battery.watts, f"battery {battery.name}"
        return None, None

    def _cpu_busy(self) -> tuple[dict[str, float], Optional[float]]:
        """CPU-seconds per second per policy since the last call, and the busiest CPU's
        utilisation in percent (psutil; the load feedback's CPU signal)."""
        try:
            import psutil

            times = psutil.cpu_times(percpu=True)
        except Exception:  # no /proc/stat (sandbox): no utilisation
            return {}, None
        prev, self._cpu_prev = self._cpu_prev, times
        if prev is None or len(prev) != len(times):
            return {}, None
        busy_per_cpu = []
        for a, b in zip(prev, times):
            total = sum(b) - sum(a)
            idle = (b.idle + getattr(b, "iowait", 0.0)) - (a.idle + getattr(a, "iowait", 0.0))
            busy_per_cpu.append(0.0 if total <= 0 else max(0.0, 1.0 - idle / total))
        out = {}
        for policy in self.policies.values():
            out[policy.name] = sum(busy_per_cpu[c] for c in policy.cpus if c < len(busy_per_cpu))
        return out, 100.0 * max(busy_per_cpu, default=0.0)
