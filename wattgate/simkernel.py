"""What the kernel and the hardware would do with the knobs, for `wattgate simulate`.

The policy under test writes a fake sysfs tree through the real controller; this module
reads the knobs back each frame and plays the parts that a fake tree cannot:

* cpufreq governors pick each policy's frequency from the last frame interval's work
  (schedutil: 1.25 x max x util, kernel/sched/cpufreq_schedutil.c; ondemand and
  conservative: to the top above 80 % load, else proportional; performance / powersave:
  the limits), clamped to scaling_min/max_freq and snapped to the OPP table;
* devfreq governors do the same for the NPU (simple_ondemand's 90 % upthreshold,
  drivers/devfreq/governor_simpleondemand.c; rknpu_ondemand behaves alike);
* the userspace governors (cpufreq_userspace.c, devfreq's governor_userspace.c): started,
  they pin the frequency the device runs at now; scaling_setspeed (devfreq:
  userspace/set_freq, there only while the governor is on) moves it, within the limits,
  and reads <unsupported> under any other governor;
* runtime PM: power/control "on" keeps the NPU powered; "auto" powers it for a job
  (after a resume latency) and suspends it autosuspend_delay_ms after the last one;
* the inference thread takes the newest admitted frame when the NPU is free; a frame
  replaced before it was taken is a stale drop, as in the daemon's newest-frame slot.

Work on the CPU is counted in cycles (estimates below) and placed on the first policy, the
little cluster, where energy-aware scheduling puts light tasks
(Documentation/scheduler/sched-energy.rst); a model without an NPU runs on the last
policy (the big cores). Watts come from policies/energy.py.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

from wattgate.drivers import cpufreq, devfreq, governors
from wattgate.drivers.accel import find_npu
from wattgate.drivers.governors import USERSPACE
from wattgate.drivers.sysfs import OsIO, Sysfs
from wattgate.policies.energy import BoardPower, EnergyMeter, Watts

# CPU work per frame, in millions of cycles. ESTIMATES from the daemon's code paths: a V4L2
# dequeue and bookkeeping; the gate on a 100-row luma image (a nearest-neighbour
# sample, blur, difference and threshold of ~13 k pixels: about 0.4 ms on this project's
# x86 test machine, taken as ~1.5 Mcycles on an in-order A55); and, per inferred frame,
# colour conversion and resize of the region to the model input, quantisation and the
# decoder (BlazeFace: 896 anchors).
CAPTURE_MCYCLES = 0.3
GATE_MCYCLES = 1.5
PREPROCESS_MCYCLES = 6.0

SCHEDUTIL_MARGIN = 1.25  # next_freq = 1.25 * max_freq * util / max (cpufreq_schedutil.c)
ONDEMAND_UP = 0.80  # ondemand's up_threshold default (DEF_FREQUENCY_UP_THRESHOLD 80)
DEVFREQ_UP = 0.90  # simple_ondemand DFSO_UPTHRESHOLD
DEVFREQ_DOWN = 0.05  # simple_ondemand DFSO_DOWNDIFFERENCTIAL


# Where a governor store's attribute sits below the sysfs root, and where the kernel's
# other lists of registered governors are (the list is global: loading a module adds the
# governor to every policy's, every device's).
GOVERNOR_STORES = {
    "scaling_governor": (f"/{cpufreq.CPUFREQ}/", cpufreq.CPUFREQ, "policy*",
                         "scaling_available_governors"),
    "governor": (f"/{devfreq.DEVFREQ}/", devfreq.DEVFREQ, "*", "available_governors"),
}
RUNTIME_PM_CONTROL = ("auto", "on")
# What scaling_setspeed reads while the policy's governor has no setspeed (cpufreq.c
# show_scaling_setspeed: the governor has no show_setspeed).
NO_SETSPEED = "<unsupported>"
UNSIGNED_ATTRIBUTES = ("scaling_min_freq", "scaling_max_freq", "min_freq", "max_freq")


class _FrequencyFiles(NamedTuple):
    """Where a cpufreq policy or a devfreq device keeps its governor and frequencies."""

    governor: str
    current: str
    floor: str
    ceiling: str
    table: str


CPUFREQ_FILES = _FrequencyFiles("scaling_governor", "scaling_cur_freq", "scaling_min_freq",
                                "scaling_max_freq", "scaling_available_frequencies")
DEVFREQ_FILES = _FrequencyFiles("governor", "cur_freq", "min_freq", "max_freq",
                                "available_frequencies")


class WatchIO(OsIO):
    """OS I/O that answers a store the way the kernel does, and notes the writes, so the
    board re-reads its knobs only after a change.

    A plain file takes any text, so a policy writing what the kernel refuses would be
    simulated as if it had worked. The kernel's answers (EINVAL, EBUSY) are given here
    for the attributes the board plays, and the file is left as it was.
    """

    def __init__(self) -> None:
        self.dirty = True
        # A frequency limit's last request, by the attribute's real path: the kernel keeps
        # it (a freq QoS / PM QoS request) apart from the limit it applies and shows.
        self._requests: dict[str, int] = {}

    def write_text(self, path: Path, data: str) -> None:
        if os.path.lexists(path):  # a missing attribute stays the OS's ENOENT
            self._request_module(path, data.strip())
            refused = self.refusal(path, data)
            if refused is not None:
                err, why = refused
                raise OSError(err, f"{os.strerror(err)} ({why})", str(path))
            limits = self._limits(path)
            if limits is not None:
                self._store_limit(path, int(data.strip()), *limits)
                self._run_governor(path.parent)
                self.dirty = True
                return
            if self._store_pinned(path, data.strip()):
                self.dirty = True
                return
        super().write_text(path, data)
        if path.name in GOVERNOR_STORES and self._frequency_of(path.parent) is not None:
            self._start_governor(path.parent, data.strip())
        self.dirty = True

    @staticmethod
    def _frequency_of(device: Path) -> Optional[_FrequencyFiles]:
        """The frequency attributes of a cpufreq policy's or a devfreq device's directory;
        None for another directory."""
        if (device / "scaling_governor").exists():
            return CPUFREQ_FILES
        if (device / "available_governors").exists():
            return DEVFREQ_FILES
        return None

    def _start_governor(self, device: Path, governor: str) -> None:
        """What the kernel does as a governor starts: userspace pins the frequency the
        device runs at now (cpufreq_userspace_policy_start: setspeed = policy->cur;
        devfreq's userspace_init adds the userspace/ group, whose set_freq shows the
        current frequency until one is stored); any other takes setspeed away
        (cpufreq) or removes that group (devfreq_userspace_handler, DEVFREQ_GOV_STOP);
        performance and powersave go to a limit (_run_governor)."""
        files = self._frequency_of(device)
        assert files is not None
        current = self._words(device / files.current)
        setspeed, pinned = device / "scaling_setspeed", device / USERSPACE
        if files is CPUFREQ_FILES:
            if setspeed.exists():
                shown = current[0] if governor == USERSPACE and current else NO_SETSPEED
                super().write_text(setspeed, shown + "\n")
        elif governor == USERSPACE:
            pinned.mkdir(exist_ok=True)
            (pinned / "set_freq").write_text((current[0] if current else "0") + "\n")
        elif pinned.is_dir():
            shutil.rmtree(pinned)
        self._run_governor(device)

    def _run_governor(self, device: Path) -> None:
        """Set the current frequency as the governor would after a change of governor or
        limits: performance and powersave go to the ceiling or the floor, userspace keeps
        its pinned frequency within the limits (cpufreq_userspace_policy_limits); the
        others are SimBoard's to play. Frequencies the tree does not show are left out."""
        files = self._frequency_of(device)
        if files is None:
            return
        governor = next(iter(self._words(device / files.governor)), None)
        floor, ceiling = self._number(device / files.floor), self._number(device / files.ceiling)
        if floor is None or ceiling is None:
            return
        if governor == "performance":
            self._set_current(device, ceiling)
        elif governor == "powersave":
            self._set_current(device, floor)
        elif governor == USERSPACE:
            current = self._number(device / files.current)
            if current is not None:
                self._set_current(device, min(max(current, floor), ceiling))

    def _store_pinned(self, path: Path, data: str) -> bool:
        """A store of scaling_setspeed or a devfreq's userspace/set_freq (refusal() took
        only a number, under the userspace governor): the frequency moves to the lowest
        listed one at or above it, within the limits (cpufreq_set: __cpufreq_driver_target,
        CPUFREQ_RELATION_L; devfreq's update_devfreq, devfreq_recommended_opp). set_freq
        shows what was stored, scaling_setspeed the frequency now (show_speed: policy->cur).
        False for any other attribute."""
        if path.name == "scaling_setspeed":
            device = path.parent
        elif path.name == "set_freq" and path.parent.name == USERSPACE:
            device = path.parent.parent
        else:
            return False
        files = self._frequency_of(device)
        if files is None:
            return False
        value = int(data)
        if files is DEVFREQ_FILES:
            super().write_text(path, f"{value}\n")
        floor, ceiling = self._number(device / files.floor), self._number(device / files.ceiling)
        table = tuple(sorted(int(w) for w in self._words(device / files.table) if w.isdigit()))
        lo = floor if floor is not None else value
        hi = ceiling if ceiling is not None else value
        self._set_current(device, _snap_up(value, table, lo, hi))
        return True

    def _set_current(self, device: Path, freq: int) -> None:
        """Show ``freq`` as the device's current frequency: scaling_cur_freq and, under the
        userspace governor, scaling_setspeed; devfreq's cur_freq and target_freq."""
        names = ("scaling_cur_freq", "scaling_setspeed") \
            if self._frequency_of(device) is CPUFREQ_FILES else ("cur_freq", "target_freq")
        for name in names:
            attribute = device / name
            if attribute.exists() and (name != "scaling_setspeed"
                                       or self._words(attribute) != (NO_SETSPEED,)):
                super().write_text(attribute, f"{freq}\n")

    def _number(self, path: Path) -> Optional[int]:
        words = self._words(path)
        return int(words[0]) if words and words[0].isdigit() else None

    def _limits(self, path: Path) -> Optional[tuple[Path, Path, int, int, bool]]:
        """(floor attribute, ceiling attribute, lowest, highest frequency, devfreq?) when
        path is a cpufreq policy's or a devfreq device's frequency limit."""
        parent, name = Path(os.path.realpath(path.parent)), path.name
        if name in ("scaling_min_freq", "scaling_max_freq"):
            bounds = [int(w) for f in ("cpuinfo_min_freq", "cpuinfo_max_freq")
                      for w in self._words(parent / f) if w.isdigit()]
            pair, devfreq = ("scaling_min_freq", "scaling_max_freq"), False
        elif name in ("min_freq", "max_freq"):
            table = [int(w) for w in self._words(parent / "available_frequencies") if w.isdigit()]
            bounds = [min(table), max(table)] if table else []
            pair, devfreq = ("min_freq", "max_freq"), True
        else:
            return None
        if len(bounds) != 2:
            return None
        return parent / pair[0], parent / pair[1], bounds[0], bounds[1], devfreq

    def _store_limit(self, path: Path, value: int, floor: Path, ceiling: Path, lowest: int,
                     highest: int, devfreq: bool) -> None:
        """Take the request and show the limits the kernel applies: a ceiling within the
        hardware's range and a floor within [lowest, ceiling]. A floor above the ceiling is
        not refused but held down to it, and applies again once a ceiling lets it
        (cpufreq_verify_within_limits in include/linux/cpufreq.h; get_freq_range in
        drivers/devfreq/devfreq.c, whose max_freq_store takes 0 as no ceiling)."""
        target = Path(os.path.realpath(path))
        if devfreq and target == ceiling and value == 0:
            value = highest
        self._requests[str(target)] = value
        asked = [self._requests.get(str(limit)) for limit in (floor, ceiling)]
        shown = [int(self.read_text(limit)) if want is None else want
                 for limit, want in zip((floor, ceiling), asked)]
        top = min(max(shown[1], lowest), highest)
        super().write_text(ceiling, f"{top}\n")
        super().write_text(floor, f"{min(max(shown[0], lowest), top)}\n")

    def _request_module(self, path: Path, governor: str) -> None:
        """A store of a governor not registered loads its module first, when the kernel's
        module tree has its file (cpufreq_parse_governor: request_module "cpufreq_<name>";
        devfreq's try_then_request_governor: "governor_<name>"); the refusal check then
        finds it listed. A module modules.dep names but whose file is gone fails to load,
        as modprobe does, and the store is refused as before."""
        store = GOVERNOR_STORES.get(path.name)
        if store is None or not governor:
            return
        marker, listing, pattern, available = store
        text = str(path)
        if marker not in text or governor in self._words(path.parent / available):
            return
        root = Path(text[: text.rfind(marker)])
        modules = governors.kernel_modules(root)
        if path.name == "scaling_governor":
            driver = next(iter(self._words(path.parent / "scaling_driver")), None)
            loadable = cpufreq.loadable_governors(modules, (), driver)
            module = f"cpufreq_{governor}"
        else:
            loadable = devfreq.loadable_governors(modules, ())
            named = {v: k for k, v in devfreq.MODULE_GOVERNORS.items()}
            module = f"governor_{named.get(governor, governor)}"
        file = modules.get(module)
        if governor not in loadable or file is None or not file.is_file():
            return
        for entry in sorted((root / listing).glob(pattern)):
            words = self._words(entry / available)
            if (entry / available).exists() and governor not in words:
                super().write_text(entry / available, " ".join((*words, governor)) + "\n")

    def _words(self, path: Path) -> tuple[str, ...]:
        try:
            return tuple(self.read_text(path).split())
        except OSError:
            return ()

    def refusal(self, path: Path, data: str) -> Optional[tuple[int, str]]:
        """(errno, why) when the kernel's store() would refuse ``data``, else None."""
        name, parent, value = path.name, path.parent, data.strip()
        if name == "scaling_governor":  # cpufreq.c store_scaling_governor
            choices = self._words(parent / "scaling_available_governors")
            if value not in choices:
                return errno.EINVAL, f"{value!r} not in scaling_available_governors"
        elif name == "governor" and os.path.exists(parent / "available_governors"):
            if value not in self._words(parent / "available_governors"):  # devfreq.c
                return errno.EINVAL, f"{value!r} not in available_governors"
        elif name in UNSIGNED_ATTRIBUTES and not value.isdigit():  # sscanf("%u"), ("%lu")
            return errno.EINVAL, f"{value!r} is not an unsigned integer"
        elif name == "control" and parent.name == "power":
            if data.rstrip("\n") not in RUNTIME_PM_CONTROL:  # runtime.c control_store
                return errno.EINVAL, f"{value!r} is not auto or on"
        elif name == "autosuspend_delay_ms" and parent.name == "power":
            if not value.lstrip("+-").isdigit():  # kstrtol
                return errno.EINVAL, f"{value!r} is not an integer"
        elif name == "energy_performance_preference":
            return self._epp_refusal(parent, value)
        elif name == "scaling_setspeed" or (name == "set_freq" and parent.name == USERSPACE):
            return self._pinned_refusal(path, value)
        return None

    def _pinned_refusal(self, path: Path, value: str) -> Optional[tuple[int, str]]:
        """scaling_setspeed takes a number under the userspace governor only (cpufreq.c
        store_scaling_setspeed: EINVAL without the governor's store_setspeed; sscanf "%u");
        devfreq's set_freq, there only under that governor, takes a number (sscanf "%lu")."""
        if path.name == "scaling_setspeed":
            governor = self._words(path.parent / "scaling_governor")
            if governor != (USERSPACE,):
                return errno.EINVAL, f"no setspeed under governor {' '.join(governor)!r}"
        if not value.isdigit():
            return errno.EINVAL, f"{value!r} is not an unsigned integer"
        return None

    def _epp_refusal(self, policy: Path, value: str) -> Optional[tuple[int, str]]:
        """intel_pstate's store: a listed preference or a raw 0..255 HWP value; under the
        performance governor anything but performance is EBUSY
        (intel_pstate_set_energy_pref_index)."""
        raw = value.isdigit() and int(value) <= 255
        choices = self._words(policy / "energy_performance_available_preferences")
        if not raw and value not in choices:
            return errno.EINVAL, f"{value!r} not in energy_performance_available_preferences"
        performance = value == "performance" or (raw and int(value) == 0)
        if (not performance and self._words(policy / "scaling_driver") == ("intel_pstate",)
                and self._words(policy / "scaling_governor") == ("performance",)):
            return errno.EBUSY, "intel_pstate holds EPP at performance under that governor"
        return None


def _snap_up(freq: float, table: tuple[int, ...], lo: int, hi: int) -> int:
    freq = min(max(freq, lo), hi)
    if not table:
        return int(freq)
    above = [f for f in table if f >= freq and lo <= f <= hi]
    return above[0] if above else max([f for f in table if f <= hi] or [table[0]])


@dataclass
class _Cpu:
    name: str
    path: str
    cpus: int
    table: tuple[int, ...]
    cpuinfo_max: int
    governor: str = "schedutil"
    lo: int = 0
    hi: int = 0
    khz: int = 0
    last_cycles: float = 0.0


@dataclass
class _Npu:
    dev: Optional[str]  # class/devfreq/NAME
    device: str
    table: tuple[int, ...]
    governor: str = "performance"
    lo: int = 0
    hi: int = 0
    hz: Optional[int] = None
    control: str = "on"
    autosuspend_s: float = 0.0
    powered_until: float = math.inf  # under "auto": when it suspends if nothing comes
    last_busy: float = 0.0  # fraction of the last interval spent computing


@dataclass
class SimCounters:
    frames: int = 0
    looked_at: int = 0  # frames the capture side kept (capture_fps)
    admitted: int = 0
    stale: int = 0
    infer_ms_total: float = 0.0
    inferred: set[int] = field(default_factory=set)  # frame indices the model ran on


class SimBoard:
    """The emulated board: knobs read from ``fs``, work in, joules out."""

    def __init__(self, fs: Sysfs, watch: WatchIO, model: BoardPower, model_ms: float) -> None:
        self.fs, self.watch, self.model, self.model_ms = fs, watch, model, model_ms
        self.cpus = [
            _Cpu(p.name, p.path, max(1, len(p.cpus)), p.frequencies_khz,
                 p.cpuinfo_max_khz or 0, khz=p.cur_khz or p.min_khz or 0)
            for p in cpufreq.discover_policies(fs)
        ]
        acc = find_npu(fs)
        self.npu: Optional[_Npu] = None
        if acc is not None and model.npu is not None:
            dev = f"class/devfreq/{acc.devfreq}" if acc.devfreq else None
            table = fs.read_int_words(f"{dev}/available_frequencies") if dev \
                else ()
            self.npu = _Npu(dev, acc.device, tuple(sorted(table)),
                            hz=fs.read_int_opt(f"{dev}/cur_freq") if dev else None)
        self.meter = EnergyMeter()
        self.counters = SimCounters()
        self._pending: Optional[tuple[int, float]] = None  # frame index, arrival time
        self._busy: list[tuple[float, float]] = []  # inference intervals (start, end)
        self._busy_until = 0.0
        self._powered: list[tuple[float, float]] = []  # NPU powered intervals under auto
        self._cpu_model_cycles = 0.0
        if self.npu is not None:
            self._initial_runtime_pm(self.npu)

    def _initial_runtime_pm(self, npu: _Npu) -> None:
        """Start from the tree's runtime PM state, not from "on": under "auto" an NPU that
        reads runtime_status "suspended" stays off until its first job, and an active one
        suspends one autosuspend delay from now."""
        npu.control = self._control(npu)
        if npu.control != "auto":
            return
        if self.fs.read_opt(f"{npu.device}/power/runtime_status") == "suspended":
            npu.powered_until = -math.inf
        else:
            npu.powered_until = self._autosuspend_s(npu)
            self._powered.append((0.0, npu.powered_until))

    def _control(self, npu: _Npu) -> str:
        """power/control as the PM core acts on it: a negative autosuspend_delay_ms keeps
        the device resumed like "on" (Documentation/ABI/testing/sysfs-devices-power)."""
        delay = self.fs.read_int_opt(f"{npu.device}/power/autosuspend_delay_ms")
        if delay is not None and delay < 0:
            return "on"
        return self.fs.read_opt(f"{npu.device}/power/control") or "on"

    def _autosuspend_s(self, npu: _Npu) -> float:
        delay = self.fs.read_int_opt(f"{npu.device}/power/autosuspend_delay_ms")
        return max(0.0, (delay or 0) / 1000.0)

    # -- knobs --------------------------------------------------------------------------------

    def _read_knobs(self, now: float) -> None:
        fs = self.fs
        for c in self.cpus:
            c.governor = fs.read_opt(f"{c.path}/scaling_governor") or "schedutil"
            c.lo = fs.read_int_opt(f"{c.path}/scaling_min_freq") or (c.table[0] if c.table else 0)
            c.hi = fs.read_int_opt(f"{c.path}/scaling_max_freq") or c.cpuinfo_max
        npu = self.npu
        if npu is None:
            return
        if npu.dev is not None:
            npu.governor = fs.read_opt(f"{npu.dev}/governor") or "performance"
            npu.lo = fs.read_int_opt(f"{npu.dev}/min_freq") or (npu.table[0] if npu.table else 0)
            npu.hi = fs.read_int_opt(f"{npu.dev}/max_freq") or (npu.table[-1] if npu.table else 0)
        control = self._control(npu)
        npu.autosuspend_s = self._autosuspend_s(npu)
        if control != npu.control:
            if control == "auto":  # pm_runtime_allow: idle from the last job, or from now
                npu.powered_until = max(now, self._busy_until) + npu.autosuspend_s
                self._powered.append((now, npu.powered_until))
            npu.control = control

    # -- governors -----------------------------------------------------------------------------

    def _cpu_governor(self, c: _Cpu, dt: float) -> None:
        top = c.cpuinfo_max or (c.table[-1] if c.table else c.hi)
        if c.governor == "performance":
            want: float = c.hi
        elif c.governor == "powersave" or not top:
            want = c.lo
        elif c.governor == "userspace":
            want = c.khz
        elif c.governor == "schedutil":
            util = c.last_cycles / (top * 1000.0 * dt)
            want = SCHEDUTIL_MARGIN * top * util
        else:  # ondemand, conservative, interactive
            load = c.last_cycles / (max(c.khz, 1) * 1000.0 * dt)
            want = c.hi if load > ONDEMAND_UP else c.lo + load * (c.hi - c.lo)
        c.khz = _snap_up(want, c.table, c.lo, c.hi)

    def _npu_governor(self, npu: _Npu) -> None:
        if not npu.table:
            return
        cur = npu.hz or npu.table[-1]
        if npu.governor == "performance":
            want: float = npu.hi
        elif npu.governor == "powersave":
            want = npu.lo
        elif npu.governor == "userspace":
            want = cur
        else:  # simple_ondemand, rknpu_ondemand
            load = npu.last_busy
            want = npu.hi if load > DEVFREQ_UP else cur * load / (DEVFREQ_UP - DEVFREQ_DOWN / 2)
        npu.hz = _snap_up(want, npu.table, npu.lo, npu.hi)

    # -- one frame interval ----------------------------------------------------------------------

    def step(self, index: int, t0: float, dt: float, looked: bool, gated: bool,
             admitted: bool) -> None:
        """Frame ``index`` captured at t0: was it kept, gated, admitted to the model?"""
        if self.watch.dirty:
            self._read_knobs(t0)
            self.watch.dirty = False
        t1 = t0 + dt
        counters = self.counters
        counters.frames += 1
        counters.looked_at += looked
        if admitted:
            counters.admitted += 1
            if self._pending is not None:
                counters.stale += 1
            self._pending = (index, t0)
        for c in self.cpus:
            self._cpu_governor(c, dt)
        if self.npu is not None:
            self._npu_governor(self.npu)
        started = self._run_inference(t0, t1)
        cycles = (CAPTURE_MCYCLES * looked + GATE_MCYCLES * gated
                  + PREPROCESS_MCYCLES * started) * 1e6
        self._account(t0, t1, dt, cycles)

    def _run_inference(self, t0: float, t1: float) -> int:
        """Start the pending job if the NPU (or CPU) frees up within [t0, t1)."""
        started = 0
        while self._pending is not None:
            index, arrival = self._pending
            start = max(arrival, self._busy_until)
            if start >= t1:
                break
            npu = self.npu
            if npu is not None:
                resumed = npu.control == "auto" and start > npu.powered_until
                if resumed:
                    start += (self.model.npu.resume_ms if self.model.npu else 0.0) / 1000.0
                speed = self.model.npu.speed(npu.hz) if self.model.npu else 1.0
                duration = self.model_ms / 1000.0 / speed
                if npu.control == "auto":
                    resume_at = start - (self.model.npu.resume_ms / 1000.0 if resumed and
                                         self.model.npu else 0.0)
                    npu.powered_until = start + duration + npu.autosuspend_s
                    self._powered.append((resume_at, npu.powered_until))
            else:
                big = self.cpus[-1] if self.cpus else None
                speed = (big.khz / big.cpuinfo_max) if big and big.cpuinfo_max else 1.0
                duration = self.model_ms / 1000.0 / max(speed, 1e-3)
                if big is not None:
                    self._cpu_model_cycles += self.model_ms / 1000.0 * big.cpuinfo_max * 1000.0
            self._busy.append((start, start + duration))
            self._busy_until = start + duration
            self.counters.inferred.add(index)
            self.counters.infer_ms_total += duration * 1000.0
            self._pending = None
            started += 1
        return started

    @staticmethod
    def _overlap(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
        total, last_end = 0.0, t0
        for a, b in sorted(intervals):
            a, b = max(a, last_end, t0), min(b, t1)
            if b > a:
                total += b - a
                last_end = b
        return total

    def _account(self, t0: float, t1: float, dt: float, cycles: float) -> None:
        model = self.model
        cpu_w = 0.0
        for i, c in enumerate(self.cpus):
            work = cycles if i == 0 else 0.0
            if i == len(self.cpus) - 1 and self.npu is None:
                work += self._cpu_model_cycles
            c.last_cycles = work
            cluster = model.clusters.get(c.name)
            if cluster is not None:
                busy = min(float(c.cpus), work / (max(c.khz, 1) * 1000.0 * dt))
                cpu_w += cluster.watts(c.khz, busy)
        self._cpu_model_cycles = 0.0
        npu_w = 0.0
        npu = self.npu
        if npu is not None and model.npu is not None:
            busy = self._overlap(self._busy, t0, t1) / dt
            if npu.control == "on":
                powered = 1.0
            else:
                powered = max(busy, self._overlap(self._powered, t0, t1) / dt)
            npu.last_busy = busy
            npu_w = model.npu.watts(npu.hz, busy, powered)
            self._powered = [iv for iv in self._powered if iv[1] > t0]
        self._busy = [iv for iv in self._busy if iv[1] > t0]
        self.meter.add(Watts(cpu_w, npu_w, 0.0, model.camera_w or 0.0, model.static_w or 0.0),
                       dt)

    def infer_duty(self) -> float:
        """Fraction of the last interval the model ran (for the load sample)."""
        return self.npu.last_busy if self.npu is not None else 0.0

    def busiest_cpu_percent(self, dt: float) -> float:
        best = 0.0
        for c in self.cpus:
            best = max(best, c.last_cycles / (max(c.khz, 1) * 1000.0 * dt))
        return min(100.0, 100.0 * best)
