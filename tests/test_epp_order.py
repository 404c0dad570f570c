"""A policy's governor is written before its EPP, whichever way the profile switches.

intel_pstate answers EBUSY to an energy_performance_preference other than "performance"
while the policy's governor is performance (Documentation/admin-guide/pm/intel_pstate.rst).
There is no intel_pstate here: ``PState`` below emulates that refusal on the fake
intel-mtl tree, and records the order the writes reach each policy.
"""

from __future__ import annotations

import errno
from pathlib import Path

from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import OsIO

CPUFREQ = "devices/system/cpu/cpufreq"
EPP = "energy_performance_preference"
HANG_S = 30.0  # a hang guard for settle(); the fake tree takes no time


class PState(OsIO):
    """OsIO with intel_pstate's EPP rule, keeping (policy, attribute, value) per write."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str]] = []

    def write_text(self, path: Path, data: str) -> None:
        if path.parent.parent.name == "cpufreq":
            value = data.strip()
            if path.name == EPP and value != "performance":
                governor = (path.parent / "scaling_governor").read_text().strip()
                if governor == "performance":
                    raise OSError(errno.EBUSY, "Device or resource busy", str(path))
            self.writes.append((path.parent.name, path.name, value))
        super().write_text(path, data)

    def order(self, policy: str) -> list[tuple[str, str]]:
        return [(name, value) for p, name, value in self.writes
                if p == policy and name in ("scaling_governor", EPP)]


def make(tmp_path: Path, io: PState) -> PowerController:
    root = materialize("intel-mtl", tmp_path / "sys")
    cfg = parse_config({
        "power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
                  "profile": "performance"},
        # sorts before "balanced", and sets the EPP only: the governor comes from the
        # baseline, and went after the EPP when both shared one sort key
        "profiles": {"away": {"cpu_epp": "power"}},
    })
    return PowerController(cfg, io=io)


def test_leaving_performance_writes_the_governor_before_the_epp(tmp_path: Path) -> None:
    io = PState()
    pc = make(tmp_path, io)
    pc.start(0.0)
    try:
        io.writes.clear()
        pc.pin("away", "test")
        assert pc.settle(HANG_S)
        assert {k: v for k, v in pc.failed.items() if k.endswith(EPP)} == {}
        assert io.order("policy0") == [("scaling_governor", "powersave"), (EPP, "power")]
        assert (tmp_path / "sys" / CPUFREQ / "policy0" / EPP).read_text().strip() == "power"
    finally:
        pc.stop()


def test_going_to_performance_writes_the_governor_first_too(tmp_path: Path) -> None:
    """The "performance" EPP is taken under any governor: the governor first costs
    nothing there, and one order for both ways keeps the rule simple."""
    io = PState()
    pc = make(tmp_path, io)
    pc.start(0.0)
    try:
        pc.pin("away", "test")
        assert pc.settle(HANG_S)
        io.writes.clear()
        pc.pin("performance", "test")
        assert pc.settle(HANG_S)
        assert pc.failed == {}
        assert io.order("policy0") == [("scaling_governor", "performance"),
                                       (EPP, "performance")]
    finally:
        pc.stop()
