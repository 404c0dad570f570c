"""Energy model: watts from clocks, utilisation and device states, in the kernel's style.

CPU: the kernel Energy Model derives each OPP's power from the device tree
(Documentation/power/energy-model.rst; drivers/opp/of.c ``_get_power``):

    P(µW) = dynamic-power-coefficient × f(MHz) × V(V)²        per CPU, fully busy

so a policy costs ``busy_cpus × P(opp) + idle_w(opp)``, where busy_cpus is CPU-seconds of
work per second and idle_w is the cluster's floor at that OPP's voltage (its CPUs in WFI,
DSU/L3 clocked), scaled by V² from the top OPP.

NPU (and GPU): busy at an OPP costs active_w scaled by f·V² from the top OPP; powered but
idle costs idle_w scaled by V²; runtime-suspended costs suspended_w. Devices without an
OPP table (a PCIe accelerator) have one frequency.

Camera and static power are constants of the board. The per-board inputs live beside the
board descriptions (wattgate/boards/*.py, ``ENERGY_MODEL``), with their sources and the
reasoning behind each estimate. Pure: states in, watts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Opp:
    freq: int  # kHz for CPUs, Hz for devfreq devices
    volts: float


def _opp_at(opps: tuple[Opp, ...], freq: Optional[int]) -> Opp:
    """The OPP a device runs at for ``freq``: the lowest one at or above it (None: top)."""
    if freq is None:
        return opps[-1]
    for opp in opps:
        if opp.freq >= freq:
            return opp
    return opps[-1]


@dataclass(frozen=True)
class ClusterPower:
    """One cpufreq policy's CPUs."""

    name: str
    coefficient: float  # dynamic-power-coefficient, µW / MHz / V²
    opps: tuple[Opp, ...]  # kHz, ascending
    idle_w: float = 0.0  # the cluster's floor at the top OPP's voltage

    def busy_w(self, khz: Optional[int]) -> float:
        """One CPU fully busy at the OPP for ``khz``."""
        opp = _opp_at(self.opps, khz)
        return self.coefficient * (opp.freq / 1000.0) * opp.volts**2 / 1e6

    def floor_w(self, khz: Optional[int]) -> float:
        opp, top = _opp_at(self.opps, khz), self.opps[-1]
        return self.idle_w * (opp.volts / top.volts) ** 2

    def watts(self, khz: Optional[int], busy_cpus: float) -> float:
        return max(0.0, busy_cpus) * self.busy_w(khz) + self.floor_w(khz)

    def cycles_per_s(self, khz: Optional[int]) -> float:
        return _opp_at(self.opps, khz).freq * 1000.0


@dataclass(frozen=True)
class DevicePower:
    """An NPU or GPU: busy, powered but idle, or runtime-suspended."""

    active_w: float  # busy at the top OPP
    idle_w: float  # powered, no job, at the top OPP's voltage
    suspended_w: float
    opps: tuple[Opp, ...] = ()  # Hz, ascending; empty for a single-frequency device
    resume_ms: float = 0.0  # runtime resume latency (spent at idle power)

    @property
    def top_hz(self) -> Optional[int]:
        return self.opps[-1].freq if self.opps else None

    def busy_w(self, hz: Optional[int]) -> float:
        if not self.opps:
            return self.active_w
        opp, top = _opp_at(self.opps, hz), self.opps[-1]
        return self.active_w * (opp.freq * opp.volts**2) / (top.freq * top.volts**2)

    def powered_w(self, hz: Optional[int]) -> float:
        if not self.opps:
            return self.idle_w
        opp, top = _opp_at(self.opps, hz), self.opps[-1]
        return self.idle_w * (opp.volts / top.volts) ** 2

    def speed(self, hz: Optional[int]) -> float:
        """Throughput relative to the top OPP (work scales with the clock)."""
        if not self.opps or hz is None:
            return 1.0
        return _opp_at(self.opps, hz).freq / self.opps[-1].freq

    def watts(self, hz: Optional[int], busy: float, powered: float) -> float:
        """``busy`` and ``powered`` are fractions of the interval (busy <= powered <= 1)."""
        busy = min(max(busy, 0.0), 1.0)
        powered = min(max(powered, busy), 1.0)
        return (
            busy * self.busy_w(hz)
            + (powered - busy) * self.powered_w(hz)
            + (1.0 - powered) * self.suspended_w
        )


@dataclass(frozen=True)
class BoardPower:
    name: str
    source: str
    clusters: Mapping[str, ClusterPower] = field(default_factory=dict)
    npu: Optional[DevicePower] = None
    gpu: Optional[DevicePower] = None
    camera_w: Optional[float] = None
    static_w: Optional[float] = None

    @property
    def unmodelled(self) -> list[str]:
        """Parts this board's model has no figures for (their watts count as 0)."""
        missing = []
        if not self.clusters:
            missing.append("cpu")
        if self.npu is None:
            missing.append("npu")
        if self.gpu is None:
            missing.append("gpu")
        if self.camera_w is None:
            missing.append("camera")
        if self.static_w is None:
            missing.append("static")
        return missing


def _opps(pairs: Any) -> tuple[Opp, ...]:
    return tuple(sorted((Opp(int(f), uv / 1e6) for f, uv in pairs or ()), key=lambda o: o.freq))


def _device(spec: Any) -> Optional[DevicePower]:
    if not isinstance(spec, Mapping):
        return None
    opps = _opps(spec.get("opps_hz_uv"))
    active = spec.get("active_w")
    coefficient = spec.get("dynamic_power_coefficient")
    if active is None and coefficient and opps:  # a DT coefficient, as for the Mali GPU
        top = opps[-1]
        active = coefficient * (top.freq / 1e6) * top.volts**2 / 1e6
    if active is None:
        return None
    return DevicePower(
        active_w=float(active),
        idle_w=float(spec.get("idle_w") or 0.0),
        suspended_w=float(spec.get("suspended_w") or 0.0),
        opps=opps,
        resume_ms=float(spec.get("resume_ms") or 0.0),
    )


def board_power(name: str, spec: Optional[Mapping[str, Any]]) -> BoardPower:
    """Parse a board's ``ENERGY_MODEL`` table (wattgate/boards); missing parts stay None.

    A CPU policy without a dynamic-power-coefficient has no model: guessing one would
    dress a number up as the kernel's.
    """
    if spec is None:
        return BoardPower(name, "no energy model")
    clusters: dict[str, ClusterPower] = {}
    cpus = spec.get("cpu") or {}
    for policy, entry in cpus.items():
        entry = cpus.get(entry["same_as"], entry) if "same_as" in entry else entry
        coefficient = entry.get("dynamic_power_coefficient")
        opps = _opps(entry.get("opps_khz_uv"))
        if coefficient and opps:
            clusters[policy] = ClusterPower(
                policy, float(coefficient), opps, float(entry.get("idle_w") or 0.0)
            )
    camera, static = spec.get("camera_w"), spec.get("static_w")
    return BoardPower(
        name=name,
        source=str(spec.get("source", "")),
        clusters=clusters,
        npu=_device(spec.get("npu")),
        gpu=_device(spec.get("gpu")),
        camera_w=None if camera is None else float(camera),
        static_w=None if static is None else float(static),
    )


# -- states and estimates -------------------------------------------------------------------


@dataclass(frozen=True)
class CpuLoad:
    khz: Optional[int]  # the policy's current frequency
    busy_cpus: float  # CPU-seconds of work per second on this policy
    # False while every CPU of the policy is offline (hot-unplugged: the policy inactive).
    # The cores are powered down, not idle in WFI at some OPP: the cluster counts 0 W.
    online: bool = True


@dataclass(frozen=True)
class DeviceLoad:
    hz: Optional[int]
    busy: float  # fraction of the interval computing
    powered: float  # fraction of the interval not runtime-suspended (>= busy)


@dataclass(frozen=True)
class PowerState:
    cpus: Mapping[str, CpuLoad] = field(default_factory=dict)
    npu: Optional[DeviceLoad] = None
    gpu: Optional[DeviceLoad] = None
    camera_on: bool = True


@dataclass(frozen=True)
class Watts:
    cpu: float = 0.0
    npu: float = 0.0
    gpu: float = 0.0
    camera: float = 0.0
    static: float = 0.0

    @property
    def steerable(self) -> float:
        """The parts power profiles change: CPU clusters, NPU and GPU."""
        return self.cpu + self.npu + self.gpu

    @property
    def total(self) -> float:
        return self.steerable + self.camera + self.static

    def to_dict(self) -> dict[str, float]:
        out = {k: round(v, 4) for k, v in asdict(self).items()}
        out["steerable"] = round(self.steerable, 4)
        out["total"] = round(self.total, 4)
        return out


def estimate(model: BoardPower, state: PowerState) -> Watts:
    """Watts per part; a policy missing from ``state`` counts idle at its top OPP, an
    offline one (its CPUs hot-unplugged) nothing."""
    cpu = 0.0
    for name, cluster in model.clusters.items():
        load = state.cpus.get(name, CpuLoad(None, 0.0))
        if load.online:
            cpu += cluster.watts(load.khz, load.busy_cpus)
    npu = gpu = 0.0
    if model.npu is not None and state.npu is not None:
        npu = model.npu.watts(state.npu.hz, state.npu.busy, state.npu.powered)
    if model.gpu is not None and state.gpu is not None:
        gpu = model.gpu.watts(state.gpu.hz, state.gpu.busy, state.gpu.powered)
    camera = (model.camera_w or 0.0) if state.camera_on else 0.0
    return Watts(cpu, npu, gpu, camera, model.static_w or 0.0)


class EnergyMeter:
    """Joules per part, integrated from watts over caller-supplied intervals."""

    def __init__(self) -> None:
        self.joules = Watts()
        self.seconds = 0.0

    def add(self, watts: Watts, dt: float) -> None:
        if dt <= 0:
            return
        j = self.joules
        self.joules = Watts(
            j.cpu + watts.cpu * dt,
            j.npu + watts.npu * dt,
            j.gpu + watts.gpu * dt,
            j.camera + watts.camera * dt,
            j.static + watts.static * dt,
        )
        self.seconds += dt

    def mean_watts(self) -> Watts:
        if self.seconds <= 0:
            return Watts()
        s, j = self.seconds, self.joules
        return Watts(j.cpu / s, j.npu / s, j.gpu / s, j.camera / s, j.static / s)
