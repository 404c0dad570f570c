"""What the machine has: the data behind ``wattgate probe``.

``probe(root)`` reads every knob and reading the drivers know (read only, no
writes); ``format_inventory`` turns it into text that also says which config
keys drive each knob; ``Inventory.to_json`` is the ``--json`` form. Cameras come
from udev (``list_cameras``), separately, because udev may be absent (containers,
build hosts) while sysfs is still worth reading.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from wattgate.drivers import vendor
from wattgate.drivers.accel import Accelerator, find_accelerators
from wattgate.drivers.cpufreq import CpuPolicy, discover_policies
from wattgate.drivers.devfreq import DevfreqDevice, discover_devfreq
from wattgate.drivers.iio import IioSensor, discover_sensors
from wattgate.drivers.meters import EnergyZone, Meter, discover_energy, discover_meters
from wattgate.drivers.runtime_pm import RuntimePm, read_runtime_pm
from wattgate.drivers.supply import Supply, discover_supplies
from wattgate.drivers.sysfs import Sysfs
from wattgate.drivers.thermal import ThermalZone, discover_zones

# Which config keys drive which knob; one place to keep in step with config.py.
KEYS = {
    "sysfs_root": "power.sysfs_root",
    "cpufreq": "profile keys cpu_governor, cpu_min_khz, cpu_max_khz",
    "epp": "profile key cpu_epp",
    "npu": "power.npu (which device); profile keys npu_governor, npu_min_hz, npu_max_hz",
    "gpu": "power.gpu (which device); profile keys gpu_governor, gpu_max_hz",
    "runtime_pm": "profile keys npu_runtime_pm (auto|on), npu_autosuspend_ms; "
    "power.runtime_pm_devices for others",
    "gpu_govern": "profile key gpu_govern (overdrive|nominal|underdrive)",
    "railgate": "profile key gpu_railgate (true|false)",
}


@dataclass(frozen=True)
class Camera:
    devnode: str
    name: str
    sys_path: str
    bus: Optional[str]
    capabilities: str


@dataclass
class Inventory:
    root: str
    policies: list[CpuPolicy] = field(default_factory=list)
    devfreq: list[DevfreqDevice] = field(default_factory=list)
    accelerators: list[Accelerator] = field(default_factory=list)
    runtime_pm: list[RuntimePm] = field(default_factory=list)
    gpu_govern: Optional[vendor.GalcoreGovern] = None
    railgate: dict[str, bool] = field(default_factory=dict)
    apex: list[vendor.ApexThermal] = field(default_factory=list)
    npu_busy_us: dict[str, int] = field(default_factory=dict)
    thermal: list[ThermalZone] = field(default_factory=list)
    meters: list[Meter] = field(default_factory=list)
    energy: list[EnergyZone] = field(default_factory=list)
    supplies: list[Supply] = field(default_factory=list)
    sensors: list[IioSensor] = field(default_factory=list)
    cameras: list[Camera] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.policies,
                self.devfreq,
                self.accelerators,
                self.thermal,
                self.meters,
                self.energy,
                self.supplies,
                self.gpu_govern,
            )
        )

    def accelerator(self, kind: str) -> Optional[Accelerator]:
        return next((a for a in self.accelerators if a.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keys"] = dict(KEYS)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def probe(
    root: str | os.PathLike[str] = "/sys",
    *,
    npu: Optional[str] = None,
    gpu: Optional[str] = None,
    runtime_pm_devices: tuple[str, ...] = (),
    cameras: Optional[list[Camera]] = None,
    fs: Optional[Sysfs] = None,
) -> Inventory:
    """Read everything wattgate could drive or read below ``root``."""
    fs = fs if fs is not None else Sysfs(root)
    accelerators = find_accelerators(fs, npu=npu, gpu=gpu)
    pm_devices = [a.device for a in accelerators] + [fs.configured(d) for d in runtime_pm_devices]
    pm = [p for p in (read_runtime_pm(fs, d) for d in dict.fromkeys(pm_devices)) if p]
    railgate = {}
    busy = {}
    for acc in accelerators:
        gate = vendor.read_railgate(fs, acc.device)
        if gate is not None:
            railgate[acc.device] = gate
        us = vendor.read_npu_busy_us(fs, acc.device)
        if us is not None:
            busy[acc.device] = us
    return Inventory(
        root=str(fs.root),
        policies=discover_policies(fs),
        devfreq=discover_devfreq(fs),
        accelerators=accelerators,
        runtime_pm=pm,
        gpu_govern=vendor.read_gpu_govern(fs),
        railgate=railgate,
        apex=vendor.read_apex(fs),
        npu_busy_us=busy,
        thermal=discover_zones(fs),
        meters=discover_meters(fs),
        energy=discover_energy(fs),
        supplies=discover_supplies(fs),
        sensors=discover_sensors(fs),
        cameras=list(cameras or []),
    )


def list_cameras(context: Any = None) -> list[Camera]:
    """video4linux capture devices known to udev; [] when udev is unavailable.

    ``context`` is a ``pyudev.Context``; pass one to reuse it (or to run under
    umockdev, whose fake udev the default context also sees).
    """
    try:
        import pyudev

        ctx = context if context is not None else pyudev.Context()
        devices = list(ctx.list_devices(subsystem="video4linux"))
    except Exception:  # no libudev, no /run/udev, sandboxed: no cameras to list
        return []
    cameras = []
    for dev in devices:
        caps = str(dev.properties.get("ID_V4L_CAPABILITIES", ""))
        if caps and ":capture:" not in caps:
            continue  # metadata and output nodes of a UVC camera
        name = dev.properties.get("ID_V4L_PRODUCT")
        if not name:
            try:
                name = dev.attributes.asstring("name")
            except (KeyError, UnicodeDecodeError):
                name = dev.sys_name
        cameras.append(
            Camera(
                devnode=str(dev.device_node or ""),
                name=str(name or dev.sys_name),
                sys_path=str(dev.sys_path),
                bus=dev.properties.get("ID_BUS"),
                capabilities=caps,
            )
        )
    return sorted(cameras, key=lambda c: c.devnode)


def _mhz(hz: Optional[int], per_mhz: int) -> str:
    return "?" if hz is None else f"{hz / per_mhz:g}"


def _policy_line(p: CpuPolicy) -> str:
    cpus = ",".join(str(c) for c in p.cpus) or "?"
    steps = f", {len(p.frequencies_khz)} steps" if p.frequencies_khz else ""
    line = (
        f"  {p.name}: CPUs {cpus}, {p.driver or '?'}, governor {p.governor or '(none)'}"
        f" of [{' '.join(p.governors)}], {_mhz(p.cpuinfo_min_khz, 1000)}-"
        f"{_mhz(p.cpuinfo_max_khz, 1000)} MHz{steps}, limits {_mhz(p.min_khz, 1000)}-"
        f"{_mhz(p.max_khz, 1000)} MHz, now {_mhz(p.cur_khz, 1000)} MHz"
    )
    if p.epp is not None:
        line += f"\n    energy_performance_preference {p.epp} of [{' '.join(p.epp_choices)}]"
    return line


def _devfreq_line(d: DevfreqDevice, tag: str) -> str:
    load = f", load {d.load_percent}%" if d.load_percent is not None else ""
    lo = d.frequencies_hz[0] if d.frequencies_hz else d.min_hz
    hi = d.frequencies_hz[-1] if d.frequencies_hz else d.max_hz
    return (
        f"  {tag}{d.name}: governor {d.governor} of [{' '.join(d.governors)}], "
        f"{_mhz(lo, 10**6)}-{_mhz(hi, 10**6)} MHz, limits {_mhz(d.min_hz, 10**6)}-"
        f"{_mhz(d.max_hz, 10**6)} MHz, now {_mhz(d.cur_hz, 10**6)} MHz{load}"
    )


def format_inventory(inv: Inventory) -> str:
    """Human-readable inventory, one section per kind of knob, with its config keys."""
    out = [f"sysfs root: {inv.root}  ({KEYS['sysfs_root']})"]
    if inv.empty:
        out.append(
            "Nothing to steer or read here: no cpufreq policies, no devfreq devices, no NPU or "
            "GPU, no thermal zones, no power meters, no batteries. wattgate can still run the "
            "model, but it cannot change or measure power on this machine."
        )
    out.append(f"\nCPU frequency policies: {len(inv.policies) or 'none'}  [{KEYS['cpufreq']}]")
    out.extend(_policy_line(p) for p in inv.policies)
    if any(p.epp is not None for p in inv.policies):
        out.append(f"  ({KEYS['epp']})")

    by_devfreq = {d.name: d for d in inv.devfreq}
    out.append(f"\nAccelerators: {len(inv.accelerators) or 'none found'}")
    for acc in inv.accelerators:
        out.append(
            f"  {acc.kind.upper()} {acc.name}: {acc.vendor}, {acc.device} (found by {acc.source})"
            f"  [{KEYS[acc.kind]}]"
        )
        if acc.devfreq and acc.devfreq in by_devfreq:
            out.append("  " + _devfreq_line(by_devfreq[acc.devfreq], "devfreq "))
        for pm in inv.runtime_pm:
            if pm.device == acc.device:
                delay = (
                    f", autosuspend {pm.autosuspend_delay_ms} ms"
                    if pm.autosuspend_delay_ms is not None
                    else ""
                )
                state = f"control {pm.control}, {pm.status}{delay}"
                out.append(f"    runtime PM: {state}  [{KEYS['runtime_pm']}]")
        if acc.device in inv.railgate:
            out.append(f"    railgate_enable {int(inv.railgate[acc.device])}  [{KEYS['railgate']}]")
        if acc.device in inv.npu_busy_us:
            out.append(f"    npu_busy_time_us {inv.npu_busy_us[acc.device]}")
    if inv.gpu_govern is not None:
        out.append(
            f"  galcore gpu_govern: {inv.gpu_govern.current} of [{' '.join(inv.gpu_govern.modes)}]"
            f"  [{KEYS['gpu_govern']}]"
        )
    for chip in inv.apex:
        trips = ", ".join(_c(t) for t in chip.trip_points_mc)
        out.append(f"  Coral {chip.name}: {_c(chip.temp_mc)}, trips {trips}")
    claimed = {a.devfreq for a in inv.accelerators}
    others = [d for d in inv.devfreq if d.name not in claimed]
    if others:
        out.append("\nOther devfreq devices (read only):")
        out.extend(_devfreq_line(d, "") for d in others)

    out.append(f"\nThermal zones: {len(inv.thermal) or 'none'}")
    for z in inv.thermal:
        trips = ", ".join(f"{_c(t.temp_mc)} {t.type}" for t in z.trips)
        out.append(f"  {z.name} {z.type}: {_c(z.temp_mc)}" + (f" (trips {trips})" if trips else ""))

    out.append(f"\nPower meters: {len(inv.meters) + len(inv.energy) or 'none'}")
    for m in inv.meters:
        rails = ", ".join(
            f"{r.label} {r.watts:.2f} W" if r.watts is not None else r.label for r in m.rails
        )
        out.append(f"  {m.name} {m.chip}: {rails}")
    for e in inv.energy:
        wrap = e.max_energy_range_uj
        out.append(f"  RAPL {e.zone} {e.name}: energy counter {e.energy_uj} uJ (wraps at {wrap})")

    out.append(f"\nPower supplies: {len(inv.supplies) or 'none'}")
    for s in inv.supplies:
        bits = [s.type or "?"]
        if s.online is not None:
            bits.append("online" if s.online else "offline")
        if s.status:
            bits.append(s.status)
        if s.capacity_percent is not None:
            bits.append(f"{s.capacity_percent}%")
        if s.watts is not None:
            bits.append(f"{s.watts:.2f} W")
        out.append(f"  {s.name}: {', '.join(bits)}")
    if inv.sensors:
        out.append("\nAmbient sensors:")
        for sensor in inv.sensors:
            bits = []
            if sensor.lux is not None:
                bits.append(f"{sensor.lux:g} lx")
            if sensor.celsius is not None:
                bits.append(f"{sensor.celsius:.1f} °C")
            out.append(f"  {sensor.name} {sensor.chip or ''}: {', '.join(bits)}")
    out.append(f"\nCameras: {len(inv.cameras) or 'none listed'}")
    out.extend(f"  {c.devnode}: {c.name}" for c in inv.cameras)
    return "\n".join(out) + "\n"


def _c(mc: Optional[int]) -> str:
    return "?" if mc is None else f"{mc / 1000:.1f} °C"
