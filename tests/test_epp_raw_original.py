"""A raw numeric EPP is a value intel_pstate takes, and one the daemon can switch back to.

Since Linux 5.9 intel_pstate's energy_performance_preference takes a raw HWP EPP, 0..255
in decimal, besides the names in energy_performance_available_preferences, and shows one
that is not a named preference's as its number (x86_energy_perf_policy sets such values).
set_epp refused any text not in the list, so an original of "102" could not be written
back when a profile without an EPP followed one with it: the other profile's EPP stayed,
a knob_failed came at every start, and the write was retried every 64 s for good.

The trees are the intel-mtl fixture's; WatchIO answers a store as intel_pstate does
(wattgate/simkernel.py), so what the kernel would refuse is refused here too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.boards import materialize
from tests.test_power_controller import CPU, HANG_S, make, read
from wattgate.daemon.logs import MessageId
from wattgate.drivers import cpufreq
from wattgate.drivers.sysfs import AttributeInvalid, Sysfs
from wattgate.simkernel import WatchIO

EPP = "energy_performance_preference"
POLICY0_EPP = f"{CPU}/policy0/{EPP}"
PROFILES = {"quiet": {"cpu_max_khz": "50%"}, "saver": {"cpu_epp": "power"}}


def raw_epp_everywhere(root: Path, value: str) -> list[str]:
    """Every policy's EPP set to ``value``, as x86_energy_perf_policy leaves it."""
    policies = sorted((root / CPU).glob("policy*"))
    for policy in policies:
        (policy / EPP).write_text(f"{value}\n")
    return [f"{CPU}/{policy.name}/{EPP}" for policy in policies]


def test_a_profile_without_epp_after_one_with_gives_a_raw_original_back(
    tmp_path: Path, caplog: Any
) -> None:
    materialize("intel-mtl", tmp_path / "sys")
    pc, root = make(tmp_path, board="intel-mtl", io=WatchIO(), power={"profile": "quiet"},
                    profiles=PROFILES)
    epps = raw_epp_everywhere(root, "102")
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
        pc.pin("saver", "uid 0")
        assert pc.settle(HANG_S)
        assert {read(root, epp) for epp in epps} == {"power"}
        pc.pin(None, "uid 0")  # back to quiet, which sets no EPP: the original again
        assert pc.settle(HANG_S)
    assert {read(root, epp) for epp in epps} == {"102"}
    failed = [r.getMessage() for r in caplog.records
              if getattr(r, "MESSAGE_ID", None) == MessageId.KNOB_FAILED]
    assert failed == []
    assert "error" not in pc.status()["knobs"][POLICY0_EPP]
    pc.stop()
    assert {read(root, epp) for epp in epps} == {"102"}


@pytest.mark.parametrize("raw", ["0", "102", "255"])
def test_set_epp_takes_a_raw_value_of_0_to_255(tmp_path: Path, raw: str) -> None:
    fs = Sysfs(materialize("intel-mtl", tmp_path / "sys"), WatchIO())
    (policy,) = [p for p in cpufreq.discover_policies(fs) if p.name == "policy0"]
    cpufreq.set_epp(fs, policy, raw)
    assert fs.read(POLICY0_EPP) == raw


@pytest.mark.parametrize("bad", ["256", "-1", "1e2", "0x66", "turbo", "", "１０"])
def test_set_epp_refuses_what_is_neither_a_listed_name_nor_0_to_255(
    tmp_path: Path, bad: str
) -> None:
    fs = Sysfs(materialize("intel-mtl", tmp_path / "sys"), WatchIO())
    (policy,) = [p for p in cpufreq.discover_policies(fs) if p.name == "policy0"]
    before = fs.read(POLICY0_EPP)
    with pytest.raises(AttributeInvalid) as refused:
        cpufreq.set_epp(fs, policy, bad)
    assert f"{bad!r} is neither one of" in str(refused.value)
    assert "nor a raw EPP 0..255" in str(refused.value)
    assert fs.read(POLICY0_EPP) == before
