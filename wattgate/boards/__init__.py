"""Fake sysfs trees of real boards, described compactly and expanded on demand.

They serve the tests, ``wattgate simulate --board`` and ``make demo``, which is why
they live in the package rather than under tests/.

Each board is a module here with a ``build(b: Board)`` function, a ``SOURCES``
text naming where every number comes from, and optionally ``ENERGY_MODEL``
(kernel Energy Model inputs: per-OPP voltage, dynamic-power-coefficient) and
``FAULTS`` (attribute -> errno the kernel would return on write; a plain file
cannot return EINVAL/EBUSY, so tests wrap the I/O layer with ``FaultyIO``).

``materialize(name, root)`` writes the tree under ``root`` and returns it. Files
end with one newline like sysfs attributes; class/bus entries are relative
symlinks into ``devices/`` as on a real system.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Union

from wattgate.policies.energy import board_power

BOARDS = ("rk3588", "jetson-orin-nano", "rpi5", "imx8mp", "intel-mtl")
SPECIAL = ("missing-knob", "write-fail", "bare")
ALL = BOARDS + SPECIAL

Value = Union[str, int]


class Board:
    """Collects files, directories and symlinks, then writes them under a root."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.dirs: set[str] = set()

    # -- primitives ------------------------------------------------------------------

    def file(self, path: str, value: Value) -> None:
        self.files[path] = f"{value}".rstrip("\n") + "\n"

    def attrs(self, base: str, values: Mapping[str, Optional[Value]]) -> None:
        for name, value in values.items():
            if value is not None:
                self.file(f"{base}/{name}", value)

    def link(self, path: str, target: str) -> None:
        """``path`` -> ``target``, both relative to the root; stored as a relative link."""
        self.links[path] = target

    def mkdir(self, path: str) -> None:
        self.dirs.add(path)

    def remove(self, prefix: str) -> None:
        for table in (self.files, self.links):
            for key in [k for k in table if k == prefix or k.startswith(prefix + "/")]:
                del table[key]
        self.dirs = {d for d in self.dirs if not (d == prefix or d.startswith(prefix + "/"))}

    # -- device helpers ----------------------------------------------------------------

    def device(
        self,
        path: str,
        *,
        bus: Optional[str] = None,
        driver: Optional[str] = None,
        runtime_pm: Optional[Mapping[str, Optional[Value]]] = None,
    ) -> None:
        """A device directory, its bus entry and driver link, optional power/ attributes."""
        self.mkdir(path)
        name = path.rsplit("/", 1)[-1]
        if bus:
            self.link(f"bus/{bus}/devices/{name}", path)
            if driver:
                self.link(f"{path}/driver", f"bus/{bus}/drivers/{driver}")
                self.link(f"bus/{bus}/drivers/{driver}/{name}", path)
                self.file(f"bus/{bus}/drivers/{driver}/uevent", "")
        if runtime_pm is not None:
            self.attrs(f"{path}/power", runtime_pm)

    def cpus(self, count: int) -> None:
        for cpu in range(count):
            self.file(f"devices/system/cpu/cpu{cpu}/online", 1)
        self.file("devices/system/cpu/online", f"0-{count - 1}")
        self.file("devices/system/cpu/possible", f"0-{count - 1}")

    def policy(
        self,
        first: int,
        cpus: Iterable[int],
        *,
        driver: str,
        governor: str,
        governors: str,
        min_khz: int,
        max_khz: int,
        cur_khz: Optional[int] = None,
        frequencies: Optional[Iterable[int]] = None,
        latency_ns: int = 40000,
        epp: Optional[str] = None,
        epp_choices: Optional[str] = None,
        extra: Optional[Mapping[str, Value]] = None,
    ) -> None:
        base = f"devices/system/cpu/cpufreq/policy{first}"
        cpu_list = " ".join(str(c) for c in cpus)
        self.attrs(
            base,
            {
                "affected_cpus": cpu_list,
                "related_cpus": cpu_list,
                "cpuinfo_min_freq": min_khz,
                "cpuinfo_max_freq": max_khz,
                "cpuinfo_transition_latency": latency_ns,
                "scaling_driver": driver,
                "scaling_governor": governor,
                "scaling_available_governors": governors,
                "scaling_min_freq": min_khz,
                "scaling_max_freq": max_khz,
                "scaling_cur_freq": cur_khz if cur_khz is not None else min_khz,
                "scaling_setspeed": "<unsupported>",
                "scaling_available_frequencies": (
                    " ".join(str(f) for f in frequencies) + " " if frequencies is not None else None
                ),
                "energy_performance_preference": epp,
                "energy_performance_available_preferences": epp_choices,
            },
        )
        self.attrs(base, extra or {})
        for cpu in cpus:
            self.link(f"devices/system/cpu/cpu{cpu}/cpufreq", base)

    def devfreq(
        self,
        device: str,
        name: str,
        *,
        governor: str,
        governors: str,
        frequencies: Iterable[int],
        cur_hz: int,
        min_hz: Optional[int] = None,
        max_hz: Optional[int] = None,
        extra: Optional[Mapping[str, Value]] = None,
    ) -> None:
        freqs = list(frequencies)
        base = f"{device}/devfreq/{name}"
        self.attrs(
            base,
            {
                "governor": governor,
                "available_governors": governors,
                "available_frequencies": " ".join(str(f) for f in freqs),
                "cur_freq": cur_hz,
                "target_freq": cur_hz,
                "min_freq": min_hz if min_hz is not None else freqs[0],
                "max_freq": max_hz if max_hz is not None else freqs[-1],
                "polling_interval": 50,
            },
        )
        self.attrs(base, extra or {})
        self.link(f"{base}/device", device)
        self.link(f"class/devfreq/{name}", base)

    def thermal(
        self, index: int, zone_type: str, temp_mc: int, trips: Iterable[tuple[int, str]] = ()
    ) -> None:
        base = f"devices/virtual/thermal/thermal_zone{index}"
        self.attrs(
            base, {"type": zone_type, "temp": temp_mc, "mode": "enabled", "policy": "step_wise"}
        )
        for k, (trip_temp, trip_type) in enumerate(trips):
            self.attrs(
                base,
                {
                    f"trip_point_{k}_temp": trip_temp,
                    f"trip_point_{k}_type": trip_type,
                    f"trip_point_{k}_hyst": 2000,
                },
            )
        self.link(f"class/thermal/thermal_zone{index}", base)

    def hwmon(self, device: str, index: int, values: Mapping[str, Value]) -> str:
        base = f"{device}/hwmon/hwmon{index}"
        self.attrs(base, values)
        self.link(f"class/hwmon/hwmon{index}", base)
        return base

    def power_supply(self, device: str, name: str, values: Mapping[str, Value]) -> None:
        base = f"{device}/power_supply/{name}"
        self.attrs(base, values)
        self.link(f"class/power_supply/{name}", base)

    # -- output ------------------------------------------------------------------------

    def write(self, root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for d in sorted(self.dirs):
            (root / d).mkdir(parents=True, exist_ok=True)
        for path, text in sorted(self.files.items()):
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        for path, dest in sorted(self.links.items()):
            link = root / path
            link.parent.mkdir(parents=True, exist_ok=True)
            rel = os.path.relpath(root / dest, link.parent) if not dest.startswith("/") else dest
            link.symlink_to(rel)
        return root


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def describe(name: str) -> Board:
    board = Board()
    module(name).build(board)
    return board


def materialize(name: str, root: Union[str, os.PathLike[str]]) -> Path:
    """Write board ``name`` under ``root`` (created if needed); returns the root."""
    return describe(name).write(Path(root))


def faults(name: str) -> dict[str, int]:
    return dict(getattr(module(name), "FAULTS", {}))


def energy_model(name: str) -> Optional[dict[str, Any]]:
    model = getattr(module(name), "ENERGY_MODEL", None)
    return dict(model) if model is not None else None


class FaultyIO:
    """OS I/O that fails writes to chosen attributes with the errno the kernel would give.

    The file is opened for writing first (so a missing path still gives ENOENT
    from the OS), then the kernel's store() answer is emulated by raising.
    """

    def __init__(self, root: Union[str, os.PathLike[str]], table: Mapping[str, int]) -> None:
        from wattgate.drivers.sysfs import OsIO

        self._os = OsIO()
        self._faults = {os.path.realpath(Path(root) / a): e for a, e in table.items()}

    def read_text(self, path: Path) -> str:
        return self._os.read_text(path)

    def write_text(self, path: Path, data: str) -> None:
        err = self._faults.get(os.path.realpath(path))
        if err is not None:
            with open(path, "a", encoding="utf-8"):
                pass
            raise OSError(err, os.strerror(err), str(path))
        self._os.write_text(path, data)


from wattgate.boards import (  # noqa: E402 - the modules import Board from here
    bare,
    imx8mp,
    intel_mtl,
    jetson_orin_nano,
    missing_knob,
    rk3588,
    rpi5,
    write_fail,
)


def _can_simulate(name: str) -> bool:
    """Whether the board's energy model has a part a profile steers: CPU clusters with a
    dynamic-power-coefficient, or an NPU. Without either, every strategy would cost 0 J."""
    model = board_power(name, energy_model(name))
    return bool(model.clusters) or model.npu is not None


SIMULATED = tuple(name for name in BOARDS if _can_simulate(name))
"""The boards `wattgate simulate --board` offers. Not jetson-orin-nano: its device tree
has no CPU coefficients and it has no NPU, and it measures itself (INA3221 rails), so
there is nothing to estimate its watts from that would not be made up."""

__all__ = [
    "ALL",
    "BOARDS",
    "SIMULATED",
    "SPECIAL",
    "Board",
    "FaultyIO",
    "bare",
    "describe",
    "energy_model",
    "faults",
    "imx8mp",
    "intel_mtl",
    "jetson_orin_nano",
    "materialize",
    "missing_knob",
    "module",
    "rk3588",
    "rpi5",
    "write_fail",
]
