"""Boost OPPs: a cpufreq-dt policy lists them in scaling_boost_frequencies, apart from
scaling_available_frequencies (freq_table.c show_available_freqs), while cpuinfo_max_freq
counts them as long as boost is on. Percentages and snaps use the whole table, so "100 %"
is the top OPP and the kernel alone (cpufreq/boost) decides whether boost runs.

The tree is the RK3588 one with the A76 clusters' OPPs above 2016 MHz moved into
scaling_boost_frequencies, as a device tree marking them turbo-mode shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import pytest

from tests.fixtures.boards import materialize
from wattgate.boards.rk3588 import BIG_KHZ
from wattgate.config import Config
from wattgate.drivers import cpufreq
from wattgate.drivers.sysfs import Sysfs
from wattgate.drivers.thermal import CoolingDevice
from wattgate.policies.profiles import Settings, resolve_all
from wattgate.policies.target import BoardCaps, CpuCaps, build

CPU = "devices/system/cpu/cpufreq"
BIG = ("policy4", "policy6")
BASE_KHZ = [f for f in BIG_KHZ if f <= 2016000]
BOOST_KHZ = [f for f in BIG_KHZ if f > 2016000]


def _words(khz: list[int]) -> str:
    return " ".join(str(f) for f in khz) + " \n"  # the kernel's trailing space


def rk3588(tmp_path: Path, *, boost: bool = True, split: bool = True) -> Sysfs:
    """The RK3588 tree; ``split`` moves the big clusters' top OPPs into
    scaling_boost_frequencies, ``boost`` False turns boost off (cpuinfo_max_freq then
    stops at the top non-boost OPP, cpufreq_frequency_table_cpuinfo)."""
    root = materialize("rk3588", tmp_path)
    (root / CPU / "boost").write_text("1\n" if boost else "0\n")
    for name in BIG if split else ():
        policy = root / CPU / name
        (policy / "scaling_available_frequencies").write_text(_words(BASE_KHZ))
        (policy / "scaling_boost_frequencies").write_text(_words(BOOST_KHZ))
        if not boost:
            for attr in ("cpuinfo_max_freq", "scaling_max_freq"):
                (policy / attr).write_text(f"{BASE_KHZ[-1]}\n")
    return Sysfs(root)


def caps(fs: Sysfs) -> BoardCaps:
    """What the daemon's discovery hands build(): the policies as the driver reads them."""
    return BoardCaps(cpus=tuple(
        CpuCaps(p.name, p.path, p.governors, True, p.cpuinfo_min_khz, p.cpuinfo_max_khz,
                p.frequencies_khz)
        for p in cpufreq.discover_policies(fs)
    ))


def test_the_table_includes_the_boost_frequencies(tmp_path: Path) -> None:
    policies = {p.name: p for p in cpufreq.discover_policies(rk3588(tmp_path))}
    for name in BIG:
        assert policies[name].frequencies_khz == tuple(BIG_KHZ)
    assert policies["policy0"].frequencies_khz[-1] == 1800000  # no boost file: as it was


def test_balanced_active_keeps_boost_open(tmp_path: Path) -> None:
    """The defect: the active state's 100 % ceiling wrote 2016000 and shut boost off."""
    active = resolve_all(Config())["balanced"].active
    knobs = build(active, caps(rk3588(tmp_path))).knobs
    for name in BIG:
        assert knobs[f"{CPU}/{name}/scaling_max_freq"] == "2400000"


@pytest.mark.parametrize("ceiling", ["40%", "95%", "100%", 2300000])
@pytest.mark.parametrize("level", [None, 0.97])
def test_percentages_mean_what_they_mean_without_the_split(
    tmp_path: Path, ceiling: Union[int, str], level: float
) -> None:
    """Listing the top OPPs as boost ones changes nothing about where a ceiling lands:
    95 % of 408..2400 MHz is 2300.4 MHz, 2256 MHz, not the 2016 MHz of the base table."""
    settings = Settings(cpu_min_khz="10%", cpu_max_khz=ceiling)
    split = build(settings, caps(rk3588(tmp_path / "split")), level)
    whole = build(settings, caps(rk3588(tmp_path / "whole", split=False)), level)
    assert split.knobs == whole.knobs


def test_boost_off_keeps_limits_within_cpuinfo(tmp_path: Path) -> None:
    """With boost off cpuinfo_max_freq is the top base OPP: neither a 100 % ceiling nor a
    100 % floor asks for a boost frequency."""
    knobs = build(Settings(cpu_min_khz="100%", cpu_max_khz="100%"),
                  caps(rk3588(tmp_path, boost=False))).knobs
    for name in BIG:
        assert knobs[f"{CPU}/{name}/scaling_max_freq"] == "2016000"
        assert knobs[f"{CPU}/{name}/scaling_min_freq"] == "2016000"


def test_set_limits_writes_a_boost_ceiling(tmp_path: Path) -> None:
    fs = rk3588(tmp_path)
    policy = cpufreq.read_policy(fs, "policy4")
    assert cpufreq.set_limits(fs, policy, max_khz=2390000) == (None, 2352000)
    assert fs.read(policy.attr("scaling_max_freq")) == "2352000"


def test_cooling_states_count_the_boost_opps(tmp_path: Path) -> None:
    """cpufreq_cooling.c counts every valid entry of the freq_table, boost ones too: state
    2 of 12 is the third highest OPP, a boost one."""
    policy = cpufreq.read_policy(rk3588(tmp_path), "policy4")
    device = CoolingDevice("cooling_device1", "cpufreq-cpu4", 2, len(BIG_KHZ) - 1)
    cap = cpufreq.thermal_cap(policy, 1, [device])
    assert cap is not None and cap.freq == 2304000


def test_intel_pstate_has_no_table_and_no_snap(tmp_path: Path) -> None:
    """intel_pstate lists no frequencies (boost is its no_turbo): percentages stay unsnapped."""
    fs = Sysfs(materialize("intel-mtl", tmp_path))
    board = caps(fs)
    assert all(cpu.frequencies == () for cpu in board.cpus)
    cpu = board.cpus[0]
    assert cpu.min_khz is not None and cpu.max_khz is not None
    knobs = build(Settings(cpu_max_khz="50%"), board).knobs
    assert knobs[f"{CPU}/{cpu.name}/scaling_max_freq"] == str(
        round(cpu.min_khz + 0.5 * (cpu.max_khz - cpu.min_khz)))
