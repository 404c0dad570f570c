"""The complete target state the policy asks of the board, and its diff against the last.

``build(settings, caps, level)`` turns one activity state's resolved settings into
attribute -> value for this board: governors picked from fallback lists, percentages
turned into kHz/Hz of each device's range and snapped to the frequencies its driver
lists, floors never above ceilings. ``BoardCaps`` is what discovery found (plain data,
filled by the daemon from the drivers), so this stays pure and testable against any
board fixture.

Attributes are paths relative to the sysfs root, the same names the journal and the
drivers use. A knob the settings leave unset is absent from the target; ``complete``
fills it with the original value, so leaving a profile undoes what it set. The daemon
writes only ``diff(applied, wanted)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

from wattgate.policies.profiles import Settings, absolute


@dataclass(frozen=True)
class CpuCaps:
    name: str  # policy0
    path: str  # devices/system/cpu/cpufreq/policy0
    governors: tuple[str, ...] = ()  # scaling_available_governors: registered now
    has_governor: bool = True
    min_khz: Optional[int] = None  # cpuinfo_min_freq
    max_khz: Optional[int] = None  # cpuinfo_max_freq
    frequencies: tuple[int, ...] = ()  # CpuPolicy.frequencies_khz: boost OPPs included
    has_min: bool = True
    has_max: bool = True
    has_epp: bool = False
    epp_choices: tuple[str, ...] = ()
    loadable: tuple[str, ...] = ()  # CpuPolicy.loadable: modules a store of the name loads


@dataclass(frozen=True)
class DevfreqCaps:
    name: str  # fdab0000.npu
    path: str  # class/devfreq/fdab0000.npu
    governors: tuple[str, ...] = ()  # available_governors: registered now
    has_governor: bool = True
    frequencies: tuple[int, ...] = ()  # Hz, ascending
    min_hz: Optional[int] = None  # lowest OPP (or min_freq when no table)
    max_hz: Optional[int] = None
    loadable: tuple[str, ...] = ()  # DevfreqDevice.loadable: modules a store loads


@dataclass(frozen=True)
class BoardCaps:
    cpus: tuple[CpuCaps, ...] = ()
    npu: Optional[DevfreqCaps] = None
    npu_pm: tuple[str, ...] = ()  # device dirs whose power/control follows npu_runtime_pm
    npu_autosuspend: tuple[str, ...] = ()  # those with power/autosuspend_delay_ms
    gpu: Optional[DevfreqCaps] = None
    gpu_railgate: Optional[str] = None  # device dir with railgate_enable (Jetson)
    galcore_govern: Optional[str] = None  # the galcore gpu_govern attribute (i.MX8M)


@dataclass(frozen=True)
class PipelineSettings:
    capture_fps: Optional[float] = None
    max_infer_fps: Optional[float] = None
    model_variant: Optional[str] = None


@dataclass(frozen=True)
class Target:
    knobs: Mapping[str, str] = field(default_factory=dict)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    notes: tuple[str, ...] = ()  # settings this board cannot honour, for the log


def snap(value: int, table: Sequence[int], lo: Optional[int], hi: Optional[int], *,
         upward: bool) -> int:
    """Clamp to lo..hi and snap to a listed frequency: floors round up, ceilings down
    (the drivers' rule: never above what was asked for a ceiling)."""
    if lo is not None:
        value = max(lo, value)
    if hi is not None:
        value = min(hi, value)
    if not table:
        return value
    if upward:
        return next((f for f in table if f >= value), table[-1])
    return next((f for f in reversed(table) if f <= value), table[0])


def _range(
    floor_setting: Optional[Union[int, str]],
    ceiling_setting: Optional[Union[int, str]],
    table: Sequence[int],
    lo: Optional[int],
    hi: Optional[int],
    level: Optional[float],
    idle_ceiling: Optional[Union[int, str]] = None,
) -> tuple[Optional[int], Optional[int]]:
    """Floor and ceiling for one device; ``level`` (0..1) slides the ceiling down toward
    its base (load feedback, policies/load.py).

    The base is the floor, or the lowest frequency without one, but never below
    ``idle_ceiling``, what the same profile's idle state caps the device at (None: no
    idle state given, the plain floor-to-ceiling slide). Below it, waking made the device
    slower than idle for the whole event: balanced's idle CPUs at 40 %, its active
    ceilings slid to the lowest clock at a low duty. A floor above the ceiling (a
    profile's cap under an included floor, or both snapping past each other between two
    OPPs) comes down to the ceiling *before* the slide: the slide never goes below its
    base, so a base left above the ceiling would lift the ceiling over what was asked, at
    any level.
    """
    if lo is None or hi is None:
        return None, None
    floor = (
        snap(absolute(floor_setting, lo, hi), table, lo, hi, upward=True)
        if floor_setting is not None
        else None
    )
    ceiling = (
        snap(absolute(ceiling_setting, lo, hi), table, lo, hi, upward=False)
        if ceiling_setting is not None
        else None
    )
    if floor is not None and ceiling is not None and floor > ceiling:
        floor = ceiling
    if ceiling is not None and level is not None:
        base = floor if floor is not None else lo
        if idle_ceiling is not None:
            base = max(base, snap(absolute(idle_ceiling, lo, hi), table, lo, hi,
                                  upward=False))
        base = min(base, ceiling)
        slid = base + max(0.0, min(1.0, level)) * (ceiling - base)
        ceiling = max(base, snap(round(slid), table, lo, hi, upward=False))
    return floor, ceiling


def _pick(wanted: Sequence[str], offered: Sequence[str],
          loadable: Sequence[str] = ()) -> Optional[str]:
    """First of ``wanted`` that is offered or loadable (tuned's "a|b" fallback: the order
    is the profile's); any if none listed.

    A governor built as a module shows in the list only once loaded, and the kernel loads
    it when its name is written, so a loadable one is as good a choice as a listed one.
    """
    if not offered:
        return wanted[0] if wanted else None
    return next((g for g in wanted if g in offered or g in loadable), None)


def _unavailable(name: str, wanted: Sequence[str], offered: Sequence[str],
                 loadable: Sequence[str]) -> str:
    """The note for a governor setting none of whose governors this board has."""
    note = f"{name}: none of governors {list(wanted)} in {list(offered)}"
    return f"{note} nor loadable {list(loadable)}" if loadable else note


def _devfreq(
    knobs: dict[str, str],
    notes: list[str],
    dev: DevfreqCaps,
    governor: Sequence[str],
    floor_setting: Optional[Union[int, str]],
    ceiling_setting: Optional[Union[int, str]],
    level: Optional[float],
    idle_ceiling: Optional[Union[int, str]] = None,
) -> None:
    if governor and dev.has_governor:
        chosen = _pick(governor, dev.governors, dev.loadable)
        if chosen is None:
            notes.append(_unavailable(dev.name, governor, dev.governors, dev.loadable))
        else:
            knobs[f"{dev.path}/governor"] = chosen
    floor, ceiling = _range(
        floor_setting, ceiling_setting, dev.frequencies, dev.min_hz, dev.max_hz, level,
        idle_ceiling,
    )
    if floor is not None:
        knobs[f"{dev.path}/min_freq"] = str(floor)
    if ceiling is not None:
        knobs[f"{dev.path}/max_freq"] = str(ceiling)


def build(settings: Settings, caps: BoardCaps, level: Optional[float] = None,
          idle: Optional[Settings] = None) -> Target:
    """The knobs for ``settings`` on this board; ``level`` steers the active ceilings, no
    lower than ``idle`` (the same profile's idle settings) lets each knob go (_range).

    A ceiling idle leaves unset is the board's own value there, as high as the top for all
    this knows: with ``idle`` given, that ceiling does not slide."""
    s = settings
    npu_idle = cpu_idle = None
    if idle is not None and level is not None:
        npu_idle = "100%" if idle.npu_max_hz is None else idle.npu_max_hz
        cpu_idle = "100%" if idle.cpu_max_khz is None else idle.cpu_max_khz
    knobs: dict[str, str] = {}
    notes: list[str] = []
    if s.npu_runtime_pm is not None:  # the NPU first: waking it is what the frame waits on
        for dev in caps.npu_pm:
            knobs[f"{dev}/power/control"] = s.npu_runtime_pm
    if s.npu_autosuspend_ms is not None:
        for dev in caps.npu_autosuspend:
            knobs[f"{dev}/power/autosuspend_delay_ms"] = str(s.npu_autosuspend_ms)
    if caps.npu is not None:
        _devfreq(knobs, notes, caps.npu, s.npu_governor, s.npu_min_hz, s.npu_max_hz, level,
                 npu_idle)
    for cpu in caps.cpus:
        chosen = None
        if s.cpu_governor and cpu.has_governor:
            chosen = _pick(s.cpu_governor, cpu.governors, cpu.loadable)
            if chosen is None:
                notes.append(_unavailable(cpu.name, s.cpu_governor, cpu.governors, cpu.loadable))
            else:
                knobs[f"{cpu.path}/scaling_governor"] = chosen
        floor, ceiling = _range(
            s.cpu_min_khz, s.cpu_max_khz, cpu.frequencies, cpu.min_khz, cpu.max_khz, level,
            cpu_idle,
        )
        if floor is not None and cpu.has_min:
            knobs[f"{cpu.path}/scaling_min_freq"] = str(floor)
        if ceiling is not None and cpu.has_max:
            knobs[f"{cpu.path}/scaling_max_freq"] = str(ceiling)
        if s.cpu_epp is not None and cpu.has_epp:
            if cpu.epp_choices and s.cpu_epp not in cpu.epp_choices:
                notes.append(f"{cpu.name}: EPP {s.cpu_epp!r} not in {list(cpu.epp_choices)}")
            elif chosen == "performance" and s.cpu_epp != "performance":
                # intel_pstate answers EBUSY to any other EPP under the performance governor
                notes.append(f"{cpu.name}: EPP {s.cpu_epp!r} needs a governor other than "
                             "performance")
            else:
                knobs[f"{cpu.path}/energy_performance_preference"] = s.cpu_epp
    if caps.gpu is not None:
        _devfreq(knobs, notes, caps.gpu, s.gpu_governor, None, s.gpu_max_hz, None)
    if s.gpu_railgate is not None and caps.gpu_railgate is not None:
        knobs[f"{caps.gpu_railgate}/railgate_enable"] = "1" if s.gpu_railgate else "0"
    if s.gpu_govern is not None and caps.galcore_govern is not None:
        knobs[caps.galcore_govern] = s.gpu_govern
    pipeline = PipelineSettings(s.capture_fps, s.max_infer_fps, s.model_variant or None)
    return Target(knobs, pipeline, tuple(notes))


# A ceiling attribute and the floor beside it: cpufreq's and devfreq's.
FLOOR_OF = {"scaling_max_freq": "scaling_min_freq", "max_freq": "min_freq"}


def complete(
    knobs: Mapping[str, str], baseline: Mapping[str, str], driven: Iterable[str]
) -> dict[str, str]:
    """Every driven knob with a value: the target's, else the original from ``baseline``;
    and a floor in effect above its ceiling lowered to the ceiling.

    Knobs with no known original (it could not be read) are left out rather than guessed.
    A floor the settings leave unset keeps its original, which may be a user's floor
    above the ceiling asked for (scaling_min_freq 1008000 under a 816000 cap): cpufreq
    before Linux 5.3 and devfreq without dev_pm_qos refuse a max below the min with
    EINVAL, and newer kernels resolve it their own way. That floor comes down to the
    ceiling, named here even when not driven (the caller then drives it, so the original
    goes back when the ceiling rises again); write_order keeps min <= max on disk.
    """
    out: dict[str, str] = {}
    for key in driven:
        if key in knobs:
            out[key] = knobs[key]
        elif key in baseline:
            out[key] = baseline[key]
    for key, value in knobs.items():
        out.setdefault(key, value)
    for key, ceiling in list(out.items()):
        path, _, name = key.rpartition("/")
        if name not in FLOOR_OF:
            continue
        floor_key = f"{path}/{FLOOR_OF[name]}"
        floor = out.get(floor_key, baseline.get(floor_key))
        if floor is not None and floor.isdigit() and ceiling.isdigit() \
                and int(floor) > int(ceiling):
            out[floor_key] = ceiling
    return out


def diff(applied: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """The knobs whose wanted value differs from the last applied one, in wanted's order."""
    return {k: v for k, v in wanted.items() if applied.get(k) != v}
