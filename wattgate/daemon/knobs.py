"""Writing one knob through its driver, and the order a batch of writes goes in.

The policy names knobs by attribute path (policies/target.py); each one goes to the driver
that knows its rules - a cpufreq governor checked against the policy's list, limits
snapped to its table, galcore's mode written by name - and through the JournaledWriter,
so its original is saved before the first write.
"""

from __future__ import annotations

from collections.abc import Mapping

from wattgate.drivers import cpufreq, devfreq, runtime_pm, vendor
from wattgate.drivers.sysfs import Writer


def write_knob(
    w: Writer,
    key: str,
    value: str,
    policies: Mapping[str, cpufreq.CpuPolicy],
    devices: Mapping[str, devfreq.DevfreqDevice],
) -> None:
    """Route one attribute to its driver; SysfsError (typed) when the kernel refuses,
    ValueError for an attribute no driver writes."""
    parent, _, name = key.rpartition("/")
    if key == vendor.GALCORE_GOVERN:
        vendor.set_gpu_govern(w, value)
    elif name == "control" and parent.endswith("/power"):
        runtime_pm.set_control(w, parent[: -len("/power")], value)
    elif name == "autosuspend_delay_ms" and parent.endswith("/power"):
        runtime_pm.set_autosuspend_delay(w, parent[: -len("/power")], int(value))
    elif name == "railgate_enable":
        vendor.set_railgate(w, parent, value == "1")
    elif parent in policies:
        policy = policies[parent]
        if name == "scaling_governor":
            cpufreq.set_governor(w, policy, [value])
        elif name == "scaling_min_freq":
            cpufreq.set_limits(w, policy, min_khz=int(value))
        elif name == "scaling_max_freq":
            cpufreq.set_limits(w, policy, max_khz=int(value))
        elif name == "energy_performance_preference":
            cpufreq.set_epp(w, policy, value)
        else:
            raise ValueError(f"no driver for {key}")
    elif parent in devices:
        dev = devices[parent]
        if name == "governor":
            devfreq.set_governor(w, dev, [value])
        elif name == "min_freq":
            devfreq.set_limits(w, dev, min_hz=int(value))
        elif name == "max_freq":
            devfreq.set_limits(w, dev, max_hz=int(value))
        else:
            raise ValueError(f"no driver for {key}")
    else:
        raise ValueError(f"no driver for {key}")


def write_order(key: str, value: str, current: Mapping[str, str]) -> tuple[int, int]:
    """Sort key for a batch: wake the NPU first, let it suspend last; a ceiling that rises
    goes before its floor and one that falls after it, so min <= max holds throughout
    (older kernels answer EINVAL to a transient min > max)."""
    name = key.rsplit("/", 1)[-1]
    if name == "control":
        group = 0 if value == "on" else 9
    elif name == "autosuspend_delay_ms":
        group = 8
    elif key.startswith("class/devfreq/"):
        group = 1
    else:
        group = 2
    if name in ("scaling_max_freq", "max_freq"):
        old = current.get(key)
        rising = old is None or not old.isdigit() or int(value) >= int(old)
        return group, 0 if rising else 2
    if name in ("scaling_min_freq", "min_freq"):
        return group, 1
    return group, -1
