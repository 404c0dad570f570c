"""CPU frequency policies: discover, read and set governor, limits and EPP.

Kernel ABI: Documentation/admin-guide/pm/cpufreq.rst (summarised in REFERENCE.md).
Each ``devices/system/cpu/cpufreq/policyN`` covers the CPUs in ``related_cpus``;
frequencies are in kHz. Mechanism only: callers say what they want, this module
checks it against what the policy offers and writes it.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from wattgate.drivers.governors import kernel_modules, store_governor
from wattgate.drivers.limits import snap, write_limits
from wattgate.drivers.sysfs import (
    AttributeBusy,
    AttributeInvalid,
    AttributeMissing,
    Sysfs,
    SysfsError,
    Writer,
)
from wattgate.drivers.thermal import (
    ACPI_PROCESSOR,
    CoolingDevice,
    ThermalCap,
    lowest_cap,
    state_ceiling,
    unthrottled_max,
    unthrottled_min,
)

CPUFREQ = "devices/system/cpu/cpufreq"
# The CPUs offline now, as a cpulist ("6-7", empty when all are online).
CPUS_OFFLINE = "devices/system/cpu/offline"
# drivers/thermal/cpufreq_cooling.c names a policy's cooling device after the CPU device of
# policy->cpu ("cpufreq-cpu4"); older kernels numbered them with an IDA in the order the
# policies registered, which is CPU order ("thermal-cpufreq-1": the second policy).
COOLING_TYPE = re.compile(r"cpufreq-cpu(?P<cpu>\d+)|thermal-cpufreq-(?P<index>\d+)")
# Drivers with ->setpolicy (intel_pstate and amd-pstate in active mode): store_scaling_governor
# takes only "performance" and "powersave" there (cpufreq_parse_policy) and loads no module.
SETPOLICY_DRIVERS = ("intel_pstate", "amd-pstate-epp", "longrun")
# ASCII digits only (str.isdigit takes "１０" too); three at most, as 255 has
RAW_EPP = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True)
class CpuPolicy:
    """One cpufreq policy as read at one moment."""

    name: str
    path: str
    cpus: tuple[int, ...]
    driver: Optional[str]
    governor: Optional[str]
    governors: tuple[str, ...]
    cpuinfo_min_khz: Optional[int]
    cpuinfo_max_khz: Optional[int]
    min_khz: Optional[int]
    max_khz: Optional[int]
    cur_khz: Optional[int]
    frequencies_khz: tuple[int, ...]  # scaling_available + scaling_boost_frequencies, ascending
    epp: Optional[str]
    epp_choices: tuple[str, ...]
    # False while every CPU of the policy is offline: cpufreq.c then answers EBUSY to
    # every show and store of the policy's attributes, so nothing above could be read.
    active: bool = True
    # Governors built as modules not loaded yet: not in scaling_available_governors, yet a
    # store of the name loads the module (cpufreq_parse_governor: request_module
    # "cpufreq_<name>") and takes it. Whether the load works (module signing, modprobe
    # present) only the store tells.
    loadable: tuple[str, ...] = ()

    def attr(self, name: str) -> str:
        return f"{self.path}/{name}"


def _cpu_list(text: Optional[str]) -> tuple[int, ...]:
    """related_cpus is space separated ("0 1 2 3"); accept ranges ("0-3") as well."""
    cpus: list[int] = []
    for part in (text or "").replace(",", " ").split():
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            cpus.append(int(part))
    return tuple(cpus)


def _governor(fs: Sysfs, path: str) -> tuple[Optional[str], bool]:
    """scaling_governor, and whether the policy is active (not EBUSY: CPUs offline)."""
    try:
        return fs.read(f"{path}/scaling_governor"), True
    except AttributeBusy:
        return None, False
    except SysfsError:
        return None, True


def offline_cpus(fs: Sysfs) -> tuple[int, ...]:
    """The CPUs offline now (devices/system/cpu/offline); () when none or unreadable."""
    return _cpu_list(fs.read_opt(CPUS_OFFLINE))


def loadable_governors(
    modules: Mapping[str, Path], listed: Sequence[str], driver: Optional[str] = None
) -> tuple[str, ...]:
    """The governors of ``modules`` (cpufreq_<name>) not in ``listed``: none under a
    setpolicy ``driver``, which takes no governor module."""
    if driver in SETPOLICY_DRIVERS:
        return ()
    names = (m[len("cpufreq_"):] for m in modules if m.startswith("cpufreq_"))
    return tuple(sorted(n for n in names if n and n not in listed))


def read_policy(
    fs: Sysfs, name: str, modules: Optional[Mapping[str, Path]] = None
) -> CpuPolicy:
    """Policy ``name`` as it reads now; ``modules`` (kernel_modules) is read when not given."""
    path = f"{CPUFREQ}/{name}"
    if not fs.is_dir(path):
        raise AttributeMissing(path, fs.path(path), errno.ENOENT, "read")
    governor, active = _governor(fs, path)
    governors = fs.read_words(f"{path}/scaling_available_governors")
    driver = fs.read_opt(f"{path}/scaling_driver")
    if modules is None:
        modules = kernel_modules(fs.root)
    freqs = fs.read_int_words(f"{path}/scaling_available_frequencies")
    if freqs:
        # The kernel lists a freq_table's boost OPPs (cpufreq-dt: opp turbo-mode) apart,
        # in scaling_boost_frequencies, yet counts them in cpuinfo_max_freq while boost
        # is on and in the cpufreq cooling states: without them a "100 %" ceiling snaps
        # below boost and shuts it off. Whether boost may run stays the kernel's call
        # (cpufreq/boost); with it off, cpuinfo_max_freq clamps below these anyway.
        freqs = tuple(sorted({*freqs, *fs.read_int_words(f"{path}/scaling_boost_frequencies")}))
    return CpuPolicy(
        name=name,
        path=path,
        cpus=_cpu_list(fs.read_opt(f"{path}/related_cpus")),
        driver=driver,
        governor=governor,
        governors=governors,
        cpuinfo_min_khz=fs.read_int_opt(f"{path}/cpuinfo_min_freq"),
        cpuinfo_max_khz=fs.read_int_opt(f"{path}/cpuinfo_max_freq"),
        min_khz=fs.read_int_opt(f"{path}/scaling_min_freq"),
        max_khz=fs.read_int_opt(f"{path}/scaling_max_freq"),
        cur_khz=fs.read_int_opt(f"{path}/scaling_cur_freq"),
        frequencies_khz=tuple(freqs),
        epp=fs.read_opt(f"{path}/energy_performance_preference"),
        epp_choices=fs.read_words(f"{path}/energy_performance_available_preferences"),
        active=active,
        loadable=loadable_governors(modules, governors, driver),
    )


def discover_policies(fs: Sysfs) -> list[CpuPolicy]:
    """Every policyN directory, in CPU order (policy0, policy4, policy6 ...)."""
    names = [n for n in fs.listdir(CPUFREQ) if n.startswith("policy") and n[6:].isdigit()]
    names.sort(key=lambda n: int(n[6:]))
    modules = kernel_modules(fs.root)
    return [read_policy(fs, n, modules) for n in names]


def set_governor(w: Writer, policy: CpuPolicy, wanted: Sequence[str]) -> str:
    """Write the first governor of ``wanted`` the policy offers or the kernel can load;
    returns it. Raises AttributeMissing when the policy has no scaling_governor (tuned
    skips such CPUs too) and AttributeInvalid as governors.store_governor says."""
    return store_governor(w, policy.attr("scaling_governor"), policy.governor,
                          policy.governors, policy.loadable, wanted)


def snap_khz(policy: CpuPolicy, khz: int, *, upward: bool) -> int:
    """Clamp to cpuinfo_min/max and snap to a listed frequency when the driver lists them.

    A ceiling snaps down (never above what was asked), a floor snaps up.
    """
    lo = policy.cpuinfo_min_khz if policy.cpuinfo_min_khz is not None else khz
    hi = policy.cpuinfo_max_khz if policy.cpuinfo_max_khz is not None else khz
    khz = max(lo, min(hi, khz))
    return snap(policy.frequencies_khz, khz, upward=upward)


def set_limits(
    w: Writer, policy: CpuPolicy, min_khz: Optional[int] = None, max_khz: Optional[int] = None
) -> tuple[Optional[int], Optional[int]]:
    """Write scaling_min_freq / scaling_max_freq (snapped); returns the values written.

    When both move, the order avoids a transient min > max, which older kernels
    reject with EINVAL.
    """
    new_min = snap_khz(policy, min_khz, upward=True) if min_khz is not None else None
    new_max = snap_khz(policy, max_khz, upward=False) if max_khz is not None else None
    return write_limits(w, policy.attr, ("scaling_min_freq", "scaling_max_freq"),
                        new_min, new_max, policy.max_khz)


def set_epp(w: Writer, policy: CpuPolicy, preference: str) -> None:
    """Write energy_performance_preference (intel_pstate / amd-pstate active mode).

    ``preference`` is one of energy_performance_available_preferences or a raw HWP EPP,
    0..255 in decimal: intel_pstate takes one since Linux 5.9 and shows an EPP that is no
    listed preference's as its number (x86_energy_perf_policy sets such values), so an
    original read as "102" must be writable back. Anything else is refused here, before
    the store. intel_pstate answers EBUSY to anything but "performance" (or 0) while the
    performance governor is active; that surfaces as AttributeBusy.
    """
    attribute = policy.attr("energy_performance_preference")
    if policy.epp is None:
        raise AttributeMissing(attribute, w.fs.path(attribute), errno.ENOENT, "write")
    if policy.epp_choices and preference not in policy.epp_choices and not raw_epp(preference):
        raise AttributeInvalid(
            attribute,
            w.fs.path(attribute),
            errno.EINVAL,
            "write",
            f"{preference!r} is neither one of {list(policy.epp_choices)} nor a raw EPP "
            f"0..255",
        )
    w.write(attribute, preference)


def raw_epp(text: str) -> bool:
    """Whether ``text`` is a raw EPP intel_pstate takes: a decimal 0..255 (kstrtouint,
    base 10, then a check against 255 in store_energy_performance_preference)."""
    return RAW_EPP.fullmatch(text) is not None and int(text) <= 255


def cools(device: CoolingDevice, policy: CpuPolicy, index: int) -> bool:
    """Whether ``device`` caps the frequency of ``policy``, the ``index``-th policy in CPU
    order: its cpufreq cooling device, or an ACPI Processor device of one of its CPUs'
    package (any Processor device when sysfs does not tell which CPUs it has: the safe
    guess, a cap taken for the user's limit would stay for good). Devfreq and
    idle-injection devices do not."""
    if device.type == ACPI_PROCESSOR:
        return device.cpus is None or not set(device.cpus).isdisjoint(policy.cpus)
    match = COOLING_TYPE.fullmatch(device.type or "")
    if match is None:
        return False
    if match["cpu"] is not None:
        return int(match["cpu"]) in policy.cpus
    return int(match["index"]) == index


def acpi_state_khz(policy: CpuPolicy, device: CoolingDevice) -> Optional[int]:
    """The ceiling a Processor ``device``'s state sets (thermal.ProcessorSteps). A device's
    state adds its own CPU's T-state to the package's step, so the step it gives is never
    below the package's: the ceiling is never above the real one."""
    top = policy.cpuinfo_max_khz
    if top is None or device.steps is None or device.cur_state is None:
        return None
    return device.steps.ceiling(top, device.cur_state)


def thermal_cap(
    policy: CpuPolicy, index: int, devices: Sequence[CoolingDevice]
) -> Optional[ThermalCap]:
    """The active cooling device of ``policy`` (the ``index``-th in CPU order) with the
    lowest ceiling (an unknown one lowest of all), if any: where policy->max is when a cap
    binds. ThermalCap.freq is in kHz."""
    return lowest_cap(
        ThermalCap(device, acpi_state_khz(policy, device)
                   if device.type == ACPI_PROCESSOR
                   else state_ceiling(policy.frequencies_khz, device.cur_state,
                                      device.max_state))
        for device in devices
        if device.active and device.cur_state is not None and cools(device, policy, index)
    )


def unthrottled_khz(policy: CpuPolicy, name: str, khz: int, cap: ThermalCap) -> Optional[int]:
    """What the board has in ``name`` of ``policy``, read as ``khz`` while ``cap`` throttles
    it, when that read is the cap's doing; None when it is the board's own.

    The kernel shows no request alone (cpufreq.c show_one: policy->max and policy->min,
    from all the freq QoS requests). scaling_max_freq at the cap is the cap: without a
    user request it reads cpuinfo_max_freq. scaling_min_freq is clamped to policy->max
    (cpufreq_verify_within_limits): read at or above scaling_max_freq while the cap binds
    there, it is taken as cpuinfo_min_freq, what it reads without a user floor
    (thermal.unthrottled_min says why). ``policy.max_khz`` is as read at discovery,
    before any write of this daemon's.
    """
    if name == "scaling_max_freq":
        return unthrottled_max(khz, policy.cpuinfo_max_khz, cap)
    if name == "scaling_min_freq":
        return unthrottled_min(khz, policy.cpuinfo_min_khz, policy.max_khz, cap)
    return None
