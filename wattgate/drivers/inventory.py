"""What the machine has: the data behind ``wattgate probe``.

``probe(root)`` reads every knob and reading the drivers know (read only, no
writes); ``format_inventory`` turns it into text that also says which config
keys drive each knob; ``Inventory.to_json`` is the ``--json`` form. Cameras are
listed separately (``survey_cameras``), by the daemon's own discovery (wattgate/drivers/
v4l2.py), because they are not below the sysfs root a fake tree replaces: from udev, or
where udev has no database (containers, no systemd-udevd) from what the kernel says.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from wattgate.drivers import v4l2, vendor
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
    "runtime_pm_listed": "listed in power.runtime_pm_devices: profile keys npu_runtime_pm "
    "(auto|on), npu_autosuspend_ms",
    "gpu_govern": "profile key gpu_govern (overdrive|nominal|underdrive)",
    "railgate": "profile key gpu_railgate (true|false)",
    "camera": 'camera.source ("auto" opens the camera marked auto)',
}

# Why a node udev describes counts as a camera (KernelNode.basis says it for the others).
UDEV_BASIS = "udev ID_V4L_CAPABILITIES"


@dataclass(frozen=True)
class Camera:
    """A video4linux capture node: one that camera.source = "auto" would consider."""

    devnode: str
    name: str
    sys_path: str
    bus: Optional[str]
    capabilities: str  # as udev's ID_V4L_CAPABILITIES spells them; "" when unknown
    auto: bool = False  # the node "auto" opens now: the first capture node
    basis: str = UDEV_BASIS  # why it counts as a camera: udev's record, or the kernel's word


@dataclass(frozen=True)
class CameraSurvey:
    """The cameras, and whether udev had a database entry for every video4linux node
    (None: there was no node to tell by)."""

    cameras: list[Camera]
    udev_database: Optional[bool]


@dataclass
class Inventory:
    root: str
    policies: list[CpuPolicy] = field(default_factory=list)
    devfreq: list[DevfreqDevice] = field(default_factory=list)
    accelerators: list[Accelerator] = field(default_factory=list)
    runtime_pm: list[RuntimePm] = field(default_factory=list)
    # the devices whose runtime PM the daemon drives: the NPU it takes (the first) and
    # those power.runtime_pm_devices lists; another accelerator's follows no profile key
    runtime_pm_driven: list[str] = field(default_factory=list)
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
    # False: some video4linux node had no udev database entry, so the kernel said which
    # nodes capture; None: not known (cameras not listed, or no nodes)
    udev_database: Optional[bool] = None

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
        """One object on one line, as every --json output: for `| head` and line readers."""
        return json.dumps(self.to_dict(), sort_keys=True)


def probe(
    root: str | os.PathLike[str] = "/sys",
    *,
    npu: Optional[str] = None,
    gpu: Optional[str] = None,
    runtime_pm_devices: tuple[str, ...] = (),
    cameras: Optional[list[Camera]] = None,
    udev_database: Optional[bool] = None,
    fs: Optional[Sysfs] = None,
) -> Inventory:
    """Read everything wattgate could drive or read below ``root``; ``cameras`` and
    ``udev_database`` are passed through (see `survey_cameras`)."""
    fs = fs if fs is not None else Sysfs(root)
    accelerators = find_accelerators(fs, npu=npu, gpu=gpu)
    pm_devices = [a.device for a in accelerators] + [fs.configured(d) for d in runtime_pm_devices]
    pm = [p for p in (read_runtime_pm(fs, d) for d in dict.fromkeys(pm_devices)) if p]
    npu = next((a.device for a in accelerators if a.kind == "npu"), None)
    # resolved, so a listed path through a class link matches the accelerator it names
    listed = [fs.resolve(fs.configured(d)) for d in runtime_pm_devices]
    driven = list(dict.fromkeys(([npu] if npu is not None else []) + listed))
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
        runtime_pm_driven=driven,
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
        udev_database=udev_database,
    )


def survey_cameras(
    context: Any = None, sysfs: Optional[Sysfs] = None, dev_root: str = v4l2.DEV_ROOT
) -> CameraSurvey:
    """The capture nodes camera.source = "auto" would consider, the one it picks marked.

    The daemon's discovery decides (v4l2.list_devices, v4l2.candidates), so a node udev has
    no record of counts as a camera on the kernel's word (VIDIOC_QUERYCAP device_caps, or
    its sysfs index), and a uvcvideo metadata node or a hardware codec does not.
    ``context`` is a ``pyudev.Context`` (umockdev's fake udev is seen by the default one);
    without a usable one the nodes come from ``sysfs``'s class/video4linux.
    """
    devices = v4l2.list_devices(context, sysfs, dev_root)
    found = v4l2.candidates(v4l2.Identity("auto"), devices)
    cameras = [_camera(d, auto=i == 0) for i, d in enumerate(found)]
    udev_database = all(d.kernel is None for d in devices) if devices else None
    return CameraSurvey(cameras, udev_database)


def _camera(device: v4l2.V4l2Device, auto: bool) -> Camera:
    return Camera(
        devnode=device.devnode,
        name=device.name,
        sys_path=device.sys_path,
        bus=device.properties.get("ID_BUS"),
        capabilities=device.capabilities,
        auto=auto,
        basis=device.kernel.basis() if device.kernel is not None else UDEV_BASIS,
    )


def _mhz(hz: Optional[int], per_mhz: int) -> str:
    return "?" if hz is None else f"{hz / per_mhz:g}"


def _loadable(governors: tuple[str, ...]) -> str:
    """The governors built as modules not loaded yet: a profile may name them, as writing
    the name has the kernel load the module (governors.py)."""
    return f" + loadable [{' '.join(governors)}]" if governors else ""


def _policy_line(p: CpuPolicy) -> str:
    if not p.active:  # every attribute answers EBUSY: nothing else to show
        return (f"  {p.name}: inactive (its CPUs are offline); "
                "wattgate drives it once they come online")
    cpus = ",".join(str(c) for c in p.cpus) or "?"
    steps = f", {len(p.frequencies_khz)} steps" if p.frequencies_khz else ""
    line = (
        f"  {p.name}: CPUs {cpus}, {p.driver or '?'}, governor {p.governor or '(none)'}"
        f" of [{' '.join(p.governors)}]{_loadable(p.loadable)}, {_mhz(p.cpuinfo_min_khz, 1000)}-"
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
        f"  {tag}{d.name}: governor {d.governor} of [{' '.join(d.governors)}]"
        f"{_loadable(d.loadable)}, "
        f"{_mhz(lo, 10**6)}-{_mhz(hi, 10**6)} MHz, limits {_mhz(d.min_hz, 10**6)}-"
        f"{_mhz(d.max_hz, 10**6)} MHz, now {_mhz(d.cur_hz, 10**6)} MHz{load}"
    )


def _runtime_pm_keys(inv: Inventory, acc: Accelerator) -> str:
    """What drives an accelerator's runtime PM: the daemon drives the NPU's and the listed
    devices' only, so naming npu_runtime_pm beside the GPU's promised what never came."""
    npu = inv.accelerator("npu")
    if npu is not None and acc.device == npu.device:
        return KEYS["runtime_pm"]
    if acc.device in inv.runtime_pm_driven:
        return KEYS["runtime_pm_listed"]
    return (f'not driven: add "/sys/{acc.device}" to power.runtime_pm_devices to have it '
            "follow npu_runtime_pm, npu_autosuspend_ms")


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
                out.append(f"    runtime PM: {state}  [{_runtime_pm_keys(inv, acc)}]")
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
    out.append(f"\nCameras: {len(inv.cameras) or 'none listed'}  [{KEYS['camera']}]")
    if inv.udev_database is False:
        out.append(
            "  udev has no database here (is systemd-udevd running?): a node is a camera when "
            "VIDIOC_QUERYCAP's device_caps say it captures or, unanswered, when it is in /dev "
            "and sysfs index 0 of its device"
        )
    out.extend(_camera_line(c) for c in inv.cameras)
    return "\n".join(out) + "\n"


def _camera_line(c: Camera) -> str:
    line = f"  {c.devnode}: {c.name}" + ("  <- auto" if c.auto else "")
    return line if c.basis == UDEV_BASIS else f"{line} (capture by {c.basis})"


def _c(mc: Optional[int]) -> str:
    return "?" if mc is None else f"{mc / 1000:.1f} °C"
