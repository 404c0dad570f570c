"""cpufreq policies on every board: discovery, governor fallback, snapped limits, EPP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.boards import BOARDS, FaultyIO, faults, materialize
from wattgate.drivers import cpufreq
from wattgate.drivers.sysfs import AttributeInvalid, AttributeMissing, Sysfs, SysfsError

EXPECTED = {
    "rk3588": {"policy0": (0, 1, 2, 3), "policy4": (4, 5), "policy6": (6, 7)},
    "jetson-orin-nano": {"policy0": (0, 1, 2, 3), "policy4": (4, 5)},
    "rpi5": {"policy0": (0, 1, 2, 3)},
    "imx8mp": {"policy0": (0, 1, 2, 3)},
    "intel-mtl": {f"policy{i}": (i,) for i in range(22)},
}
FALLBACK = ["schedutil", "ondemand", "powersave"]


def board(name: str, tmp_path: Path) -> Sysfs:
    return Sysfs(materialize(name, tmp_path))


@pytest.mark.parametrize("name", BOARDS)
def test_discovery_matches_the_board(name: str, tmp_path: Path) -> None:
    policies = cpufreq.discover_policies(board(name, tmp_path))
    assert {p.name: p.cpus for p in policies} == EXPECTED[name]
    for p in policies:
        assert p.governor in p.governors
        assert p.cpuinfo_min_khz is not None and p.cpuinfo_max_khz is not None
        assert p.cpuinfo_min_khz < p.cpuinfo_max_khz


@pytest.mark.parametrize("name", BOARDS)
def test_governor_fallback_picks_first_available(name: str, tmp_path: Path) -> None:
    fs = board(name, tmp_path)
    for policy in cpufreq.discover_policies(fs):
        chosen = cpufreq.set_governor(fs, policy, ["conservative", *FALLBACK])
        # intel_pstate in active mode offers only performance and powersave
        expected = "powersave" if name == "intel-mtl" else "conservative"
        assert chosen == expected
        assert fs.read(policy.attr("scaling_governor")) == expected
        with pytest.raises(AttributeInvalid):
            cpufreq.set_governor(fs, policy, ["interactive-not-here"])


@pytest.mark.parametrize("name", BOARDS)
def test_limits_are_clamped_and_snapped(name: str, tmp_path: Path) -> None:
    fs = board(name, tmp_path)
    for policy in cpufreq.discover_policies(fs):
        lo, hi = policy.cpuinfo_min_khz, policy.cpuinfo_max_khz
        assert lo is not None and hi is not None
        new_min, new_max = cpufreq.set_limits(fs, policy, min_khz=1, max_khz=hi + 10**6)
        assert (new_min, new_max) == (lo, hi)
        ask = (lo + hi) // 2 + 1
        _, capped = cpufreq.set_limits(fs, policy, max_khz=ask)
        assert capped is not None and capped <= ask
        if policy.frequencies_khz:
            assert capped in policy.frequencies_khz
        assert fs.read_int(policy.attr("scaling_max_freq")) == capped


def test_rk3588_snaps_to_the_opp_table(tmp_path: Path) -> None:
    fs = board("rk3588", tmp_path)
    policy = cpufreq.read_policy(fs, "policy4")
    assert cpufreq.set_limits(fs, policy, min_khz=700000, max_khz=1500000) == (816000, 1416000)
    assert fs.read("devices/system/cpu/cpufreq/policy4/scaling_min_freq") == "816000"


@pytest.mark.parametrize("name", BOARDS)
def test_epp_only_where_the_driver_has_it(name: str, tmp_path: Path) -> None:
    fs = board(name, tmp_path)
    policy = cpufreq.discover_policies(fs)[0]
    if name == "intel-mtl":
        cpufreq.set_epp(fs, policy, "power")
        assert fs.read(policy.attr("energy_performance_preference")) == "power"
        with pytest.raises(AttributeInvalid):
            cpufreq.set_epp(fs, policy, "turbo")
    else:
        assert policy.epp is None
        with pytest.raises(AttributeMissing):
            cpufreq.set_epp(fs, policy, "power")


def test_missing_knobs(tmp_path: Path) -> None:
    fs = board("missing-knob", tmp_path)
    policies = {p.name: p for p in cpufreq.discover_policies(fs)}
    assert policies["policy4"].governor is None
    with pytest.raises(AttributeMissing):
        cpufreq.set_governor(fs, policies["policy4"], FALLBACK)
    assert policies["policy6"].frequencies_khz == ()
    # no table: clamped to cpuinfo limits only, not snapped
    assert cpufreq.set_limits(fs, policies["policy6"], max_khz=1500000) == (None, 1500000)


def test_failing_writes_raise_typed_errors(tmp_path: Path) -> None:
    root = materialize("write-fail", tmp_path)
    fs = Sysfs(root, FaultyIO(root, faults("write-fail")))
    policies = {p.name: p for p in cpufreq.discover_policies(fs)}
    with pytest.raises(AttributeInvalid):
        cpufreq.set_limits(fs, policies["policy4"], max_khz=1200000)
    with pytest.raises(SysfsError):  # scaling_min_freq is a directory here
        cpufreq.set_limits(fs, policies["policy6"], min_khz=1200000)
    # the other policies are unaffected
    cpufreq.set_limits(fs, policies["policy0"], max_khz=1200000)
    assert fs.read("devices/system/cpu/cpufreq/policy0/scaling_max_freq") == "1200000"


def test_a_frequency_table_with_a_word_that_is_not_a_number_is_no_table(tmp_path: Path) -> None:
    """One odd word in scaling_available_frequencies raised ValueError out of discovery,
    and so out of the daemon's start; the table is now unknown (limits are still clamped
    to cpuinfo_min/max) and the rest of the board is driven as before."""
    root = materialize("rk3588", tmp_path)
    table = root / "devices/system/cpu/cpufreq/policy0/scaling_available_frequencies"
    table.write_text("408000 600000 <unsupported>\n")
    policies = {p.name: p for p in cpufreq.discover_policies(Sysfs(root))}
    assert policies["policy0"].frequencies_khz == ()
    assert policies["policy0"].cpuinfo_max_khz == 1800000
    assert policies["policy4"].frequencies_khz  # the others read as before
