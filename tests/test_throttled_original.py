"""A CPU throttled when the daemon starts: its scaling_max_freq is not the board's own.

Since Linux 5.3 a cpufreq limit is a frequency QoS request; reading scaling_max_freq gives
``policy->max``, the lowest of all max requests, the cpufreq cooling device's among them.
A start while the SoC is hot read the thermal cap, journaled it as the original and wrote
it back at exit as the user's own limit, where it stayed after the SoC cooled down.

The same holds for a devfreq device (an NPU, a GPU) under its devfreq cooling device:
max_freq shows the lowest max request, the cooling device's among them, and min_freq is
clamped to it (drivers/devfreq/devfreq.c devfreq_get_freq_range).

The trees are the rk3588 fixture with its cpufreq and devfreq cooling devices, the Jetson
one with its GPU's, and the intel-mtl and Grace (Tegra241) ones with the ACPI processor
driver's "Processor" devices (tests/fixtures/boards/cooling.py), and the files show what the
kernel would show while throttled. Nothing is mocked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.boards import FaultyIO, materialize
from tests.fixtures.boards.cooling import (
    devfreq_cooling,
    devfreq_hz,
    state_khz,
    throttled_grace,
    throttled_intel_mtl,
    throttled_rk3588,
)
from tests.test_power_controller import CPU, MOTION, NPU, make, read
from tests.test_power_writer import Recording
from wattgate.boards import describe

BIG_MAX = f"{CPU}/policy4/scaling_max_freq"
BIG_MIN = f"{CPU}/policy4/scaling_min_freq"
P_MAX, E_MAX, LP_MAX = (f"{CPU}/policy{n}/scaling_max_freq" for n in (0, 12, 20))
HALF = {"balanced": {"cpu_max_khz": "50%"}}  # intel-mtl: every policy's ceiling is driven
TWO_PACKAGES = [0] * 12 + [1] * 10  # a made-up second package: the E and LP cores
NPU_MAX, NPU_MIN = f"{NPU}/max_freq", f"{NPU}/min_freq"
MHZ = 1_000_000


def big_cap(state: int) -> int:
    return state_khz(describe("rk3588"), "policy4", state)


def warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "wattgate.power" and r.levelno == logging.WARNING]


def test_throttled_at_start_journals_the_unthrottled_ceiling_and_exit_gives_it_back(
    tmp_path: Path, caplog: Any
) -> None:
    root = throttled_rk3588(tmp_path / "sys", {"policy4": 6})
    assert read(root, BIG_MAX) == str(big_cap(6)) == "1800000"  # what the kernel shows now
    pc, _ = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    assert pc.baseline[BIG_MAX] == "2400000"  # cpuinfo_max_freq: no cap, no user limit
    assert pc.status()["knobs"][BIG_MAX]["original"] == "2400000"
    assert read(root, BIG_MAX) == "1200000"  # the idle ceiling: a user request, thermal still caps
    assert pc.journal is not None and pc.journal.original(BIG_MAX) == "2400000\n"
    # the policies no cooling device holds keep what they read
    assert pc.baseline[f"{CPU}/policy0/scaling_max_freq"] == "1800000"
    assert pc.baseline[f"{CPU}/policy6/scaling_max_freq"] == "2400000"
    [warning] = [w for w in warnings(caplog) if "cooling_device" in w]
    for part in ("policy4", "cooling_device1", "cpufreq-cpu4", "1800000", "2400000"):
        assert part in warning
    pc.stop()
    assert read(root, BIG_MAX) == "2400000"  # not the throttled 1800000, for good


def test_bsp_510_cooling_device_names_count_policies_in_cpu_order(tmp_path: Path) -> None:
    """thermal-cpufreq-1 is the second policy's, policy4 (an IDA number, not a CPU)."""
    root = throttled_rk3588(tmp_path / "sys", {"policy4": 3}, legacy=True)
    pc, _ = make(tmp_path)
    pc.start(0.0)
    assert pc.baseline[BIG_MAX] == "2400000"
    assert pc.baseline[f"{CPU}/policy6/scaling_max_freq"] == "2400000"
    pc.stop()
    assert read(root, BIG_MAX) == "2400000"


def test_a_user_limit_below_the_thermal_cap_is_the_original(tmp_path: Path, caplog: Any) -> None:
    """policy->max below the cap's frequency is not the cap's doing: the user's own limit
    (or another request) binds, and it is what the board had."""
    root = throttled_rk3588(tmp_path / "sys", {"policy4": 6}, limits={"policy4": 1416000})
    assert read(root, BIG_MAX) == "1416000"
    pc, _ = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    assert pc.baseline[BIG_MAX] == "1416000"
    assert not [w for w in warnings(caplog) if "cooling_device" in w]
    pc.on_gate(MOTION, 1.0)  # active: 2400000 asked, the file holds the request
    pc.stop()
    assert read(root, BIG_MAX) == "1416000"


@pytest.mark.parametrize("throttle, key, value", [
    ({"limits": {"policy4": 2016000}}, BIG_MAX, "2016000"),
    ({"npu_state": 3, "npu_limits": (None, 600 * MHZ)}, NPU_MAX, "600000000"),
], ids=["cooling-devices-at-state-0", "npu-user-limit-below-the-cap"])
def test_a_value_no_cap_explains_is_the_original(
    tmp_path: Path, caplog: Any, throttle: dict[str, Any], key: str, value: str
) -> None:
    """A limit read at start is the user's, kept without a warning and given back at exit,
    when no cooling device explains it: every one at state 0, or the user's NPU limit below
    the cap of the one that throttles."""
    root = throttled_rk3588(tmp_path / "sys", {}, **throttle)
    assert read(root, key) == value
    pc, _ = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    assert pc.baseline[key] == value
    assert not [w for w in warnings(caplog) if "cooling_device" in w]
    pc.stop()
    assert read(root, key) == value


def test_x86_without_cooling_devices_keeps_what_it_reads(tmp_path: Path) -> None:
    """intel-mtl has no cpufreq cooling devices: a lowered ceiling read at start is the
    user's, and it is what the exit gives back."""
    root = materialize("intel-mtl", tmp_path / "sys")
    limit = f"{CPU}/policy0/scaling_max_freq"
    (root / limit).write_text("2000000\n")
    pc, _ = make(tmp_path, "intel-mtl", profiles={"balanced": {"cpu_max_khz": "50%"}})
    pc.start(0.0)
    assert pc.baseline[limit] == "2000000"
    assert read(root, limit) != "2000000"  # the profile did write it
    pc.stop()
    assert read(root, limit) == "2000000"


def test_a_crashed_runs_journal_still_beats_the_thermal_correction(tmp_path: Path) -> None:
    """The crashed run journaled 2016000 (the user's limit, read cool); its restore at this
    start is refused (EBUSY), so the attribute holds the crashed run's value and the
    journal the board's: that stays the original, not cpuinfo_max_freq."""
    root = throttled_rk3588(tmp_path / "sys", {}, limits={"policy4": 2016000})
    crashed, _ = make(tmp_path)
    crashed.start(0.0)
    assert read(root, BIG_MAX) == "1200000"
    del crashed  # SIGKILL: no stop(); the journal's lock goes with the process
    (root / "devices/virtual/thermal/cooling_device1/cur_state").write_text("6\n")
    pc, _ = make(tmp_path, io=FaultyIO(root, {BIG_MAX: 16}))  # EBUSY on write
    pc.start(0.0)
    assert pc.baseline[BIG_MAX] == "2016000"


# -- ACPI "Processor" cooling devices (x86, arm64 servers) -------------------------------------


def test_acpi_processor_devices_cap_every_policy_of_their_package(
    tmp_path: Path, caplog: Any
) -> None:
    """State 1: every policy of the package at 80 % of its own cpuinfo_max_freq."""
    root = throttled_intel_mtl(tmp_path / "sys", 1)
    assert [read(root, a) for a in (P_MAX, E_MAX, LP_MAX)] == ["3840000", "3040000", "2000000"]
    pc, _ = make(tmp_path, "intel-mtl", profiles=HALF)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    assert [pc.baseline[a] for a in (P_MAX, E_MAX, LP_MAX)] == ["4800000", "3800000", "2500000"]
    assert any("Processor" in w and "policy0" in w for w in warnings(caplog))
    pc.stop()
    assert [read(root, a) for a in (P_MAX, E_MAX, LP_MAX)] == ["4800000", "3800000", "2500000"]


@pytest.mark.parametrize("build, limit, cap, top", [
    (partial(throttled_intel_mtl, state=5, max_state=10), 1500000, 1920000, 4800000),
    (partial(throttled_grace, state=4), 2500000, 2764800, 3456000),
    (partial(throttled_grace, state=1, kernel_pctg=None), 2500000, 2764800, 3456000),
], ids=["x86-t-states-cap-no-lower", "tegra241-5-percent-steps", "tegra241-before-linux-6.8"])
def test_a_user_limit_below_the_acpi_cap_stays_and_policy1_at_the_cap_is_not_the_users(
    tmp_path: Path, build: Callable[..., Path], limit: int, cap: int, top: int
) -> None:
    """policy0's ``limit`` is below the Processor cap: the user's; policy1 reads the cap
    and is not. intel-mtl at state 5 of 10: the cpufreq steps end at 3 (40 %, 1920000 for a
    P-core), the other two are T-states. Grace (Tegra241) at state 4 of 18: 5 % steps from
    Linux 6.8 (acpi_arch_thermal_cpufreq_pctg), 80 %; 20 % steps would put the cap at 40 %
    and take the user's 2500000 for it. Grace under an older kernel, state 1 of 3: 20 %
    steps though soc0 names Tegra241 (max_state tells); 5 % ones would take the cap for the
    user's limit."""
    root = build(tmp_path / "sys", limits={"policy0": limit})
    policy1 = f"{CPU}/policy1/scaling_max_freq"
    assert (read(root, P_MAX), read(root, policy1)) == (str(limit), str(cap))
    pc, _ = make(tmp_path, profiles=HALF)
    pc.start(0.0)
    assert (pc.baseline[P_MAX], pc.baseline[policy1]) == (str(limit), str(top))


def test_a_processor_device_caps_only_the_package_of_its_cpu(tmp_path: Path) -> None:
    """Package 1 (CPUs 12-21) is hot. Its devices are cooling_device0-9 (the namespace lists
    the processors in reverse): the CPU comes from the ACPI device's physical_node link, not
    from the device's number. policy0's 4000000 is the user's, though a state-1 cap of
    package 0 would read the same."""
    root = throttled_intel_mtl(tmp_path / "sys", 1, packages=TWO_PACKAGES, hot_package=1,
                               limits={"policy0": 4000000})
    pc, _ = make(tmp_path, "intel-mtl", profiles=HALF)
    pc.start(0.0)
    assert [pc.baseline[a] for a in (P_MAX, E_MAX, LP_MAX)] == ["4000000", "3800000", "2500000"]
    pc.stop()
    assert read(root, P_MAX) == "4000000"


def test_without_the_links_an_active_processor_device_caps_every_policy(tmp_path: Path) -> None:
    """Which CPU a Processor device is cannot be told: any active one may cap any policy, so
    a value at or above the cap is not taken for the user's (policy0's 4000000 is lost; the
    other way round a cap would stay for good)."""
    throttled_intel_mtl(tmp_path / "sys", 1, packages=TWO_PACKAGES, hot_package=1,
                        limits={"policy0": 4000000}, linked=False)
    pc, _ = make(tmp_path, "intel-mtl", profiles=HALF)
    pc.start(0.0)
    assert [pc.baseline[a] for a in (P_MAX, E_MAX, LP_MAX)] == ["4800000", "3800000", "2500000"]


# -- scaling_min_freq clamped to the cap ----------------------------------------------------------


def test_a_floor_clamped_to_the_thermal_cap_is_not_the_original(
    tmp_path: Path, caplog: Any
) -> None:
    """The user's 2016000 floor is above the state-6 cap (1800000): policy->min reads the
    cap (cpufreq_verify_within_limits). Journaled, the exit would leave a 1800000 floor
    after the SoC cooled; cpuinfo_min_freq is what the file shows without a user floor."""
    root = throttled_rk3588(tmp_path / "sys", {"policy4": 6}, floors={"policy4": 2016000})
    assert read(root, BIG_MIN) == read(root, BIG_MAX) == "1800000"
    pc, _ = make(tmp_path, profiles={"balanced": {"cpu_min_khz": "0%"}})
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    assert pc.baseline[BIG_MIN] == "408000"
    assert any("scaling_min_freq" in w and "policy4" in w for w in warnings(caplog))
    pc.stop()
    assert read(root, BIG_MIN) == "408000"


def test_a_floor_below_the_thermal_cap_is_the_users(tmp_path: Path) -> None:
    root = throttled_rk3588(tmp_path / "sys", {"policy4": 6}, floors={"policy4": 1416000})
    pc, _ = make(tmp_path, profiles={"balanced": {"cpu_min_khz": "0%"}})
    pc.start(0.0)
    assert pc.baseline[BIG_MIN] == "1416000"
    pc.stop()
    assert read(root, BIG_MIN) == "1416000"


def test_a_floor_clamped_to_an_acpi_cap_is_not_the_original(tmp_path: Path) -> None:
    """The same on x86: a 4000000 floor under a state-1 Processor cap (3840000)."""
    p_min = f"{CPU}/policy0/scaling_min_freq"
    root = throttled_intel_mtl(tmp_path / "sys", 1, floors={"policy0": 4000000})
    assert read(root, p_min) == "3840000"
    pc, _ = make(tmp_path, "intel-mtl", profiles={"balanced": {"cpu_min_khz": "0%"}})
    pc.start(0.0)
    assert pc.baseline[p_min] == "400000"


# -- devfreq cooling devices (NPU, GPU) ------------------------------------------------------------


def npu_cap(state: int) -> int:
    return devfreq_hz(describe("rk3588"), "fdab0000.npu", state)


def test_a_throttled_npu_at_start_journals_its_highest_opp_and_exit_gives_it_back(
    tmp_path: Path, caplog: Any
) -> None:
    """State 3 of 7 caps the NPU at its fourth highest OPP; max_freq reads that."""
    root = throttled_rk3588(tmp_path / "sys", {}, npu_state=3)
    assert read(root, NPU_MAX) == str(npu_cap(3)) == "700000000"
    pc, _ = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    assert pc.baseline[NPU_MAX] == "1000000000"  # the highest OPP: no cap, no user limit
    assert read(root, NPU_MAX) == "300000000"  # idle: the profile's request, the cap holds
    assert pc.journal is not None and pc.journal.original(NPU_MAX) == "1000000000\n"
    [warning] = [w for w in warnings(caplog) if "cooling_device" in w]
    for part in ("fdab0000.npu", "max_freq", "cooling_device4", "devfreq-fdab0000.npu",
                 "700000000", "1000000000"):
        assert part in warning
    pc.stop()
    assert read(root, NPU_MAX) == "1000000000"


def test_the_gpus_cooling_device_caps_no_npu(tmp_path: Path) -> None:
    """devfreq-fb000000.gpu at state 2 (800 MHz): the NPU's 900 MHz limit is the user's."""
    throttled_rk3588(tmp_path / "sys", {}, npu_limits=(None, 900 * MHZ))
    pc, _ = make(tmp_path)
    pc.start(0.0)
    assert pc.baseline[NPU_MAX] == "900000000"


def test_an_npu_floor_clamped_to_the_cap_is_not_the_original(tmp_path: Path) -> None:
    """The user's 800 MHz floor is above the state-3 cap: min_freq reads 700 MHz (clamped
    to max_freq). The exit would leave a 700 MHz floor after the NPU cooled; the lowest OPP
    is what min_freq reads without a user floor."""
    root = throttled_rk3588(tmp_path / "sys", {}, npu_state=3, npu_limits=(800 * MHZ, None))
    assert read(root, NPU_MIN) == read(root, NPU_MAX) == "700000000"
    pc, _ = make(tmp_path, profiles={"balanced": {"npu_min_hz": "0%"}})
    pc.start(0.0)
    assert pc.baseline[NPU_MIN] == "300000000"
    pc.stop()
    assert read(root, NPU_MIN) == "300000000"


def test_legacy_numbered_devfreq_cooling_devices_cap_any_device_their_states_fit(
    tmp_path: Path,
) -> None:
    """thermal-devfreq-1 (the 5.10 BSP's IDA number) does not say whose it is; it has as
    many states as the NPU has OPPs, so it may be the NPU's."""
    root = throttled_rk3588(tmp_path / "sys", {}, legacy=True, npu_state=3)
    pc, _ = make(tmp_path)
    pc.start(0.0)
    assert pc.baseline[NPU_MAX] == "1000000000"
    pc.stop()
    assert read(root, NPU_MAX) == "1000000000"


def test_a_throttled_jetson_gpu_journals_its_highest_opp(tmp_path: Path) -> None:
    """Orin's GPU devfreq is 17000000.ga10b; its cooling device devfreq-17000000.ga10b."""
    b = describe("jetson-orin-nano")
    devfreq_cooling(b, 0, "17000000.ga10b", 2)
    root = b.write(tmp_path / "sys")
    gpu_max = "class/devfreq/17000000.ga10b/max_freq"
    assert read(root, gpu_max) == "420750000"
    pc, _ = make(tmp_path, "jetson-orin-nano", profiles={"balanced": {"gpu_max_hz": "50%"}})
    pc.start(0.0)
    assert pc.baseline[gpu_max] == "624750000"
    pc.stop()
    assert read(root, gpu_max) == "624750000"


def test_a_legacy_devfreq_cap_the_npu_reads_above_is_not_the_npus(tmp_path: Path) -> None:
    """The GPU's thermal-devfreq-0 at state 2 would hold the NPU at 800 MHz, and both have
    8 OPPs, so it may be either's. The NPU reads the user's 900 MHz, above that ceiling:
    max_freq shows the lowest max request, so the cap is the GPU's and 900 MHz the user's."""
    root = throttled_rk3588(tmp_path / "sys", {}, legacy=True, npu_limits=(None, 900 * MHZ))
    assert read(root, NPU_MAX) == "900000000"
    pc, _ = make(tmp_path)
    pc.start(0.0)
    assert pc.baseline[NPU_MAX] == "900000000"
    pc.stop()
    assert read(root, NPU_MAX) == "900000000"


def test_a_ceiling_equal_to_the_thermal_cap_is_still_written(tmp_path: Path) -> None:
    """policy0 is capped at 816000 kHz, exactly the balanced idle ceiling ("40%"). The file
    shows the cap, not the user's request (1800000), so a read that matches proves
    nothing: the write was skipped as already there, the value taken as applied and never
    tried again, and once the SoC cooled the little cores ran up to 1.8 GHz at idle. The
    same for an NPU capped at its idle ceiling."""
    root = throttled_rk3588(tmp_path / "sys", {"policy0": 5}, npu_state=7)
    p0_max = f"{CPU}/policy0/scaling_max_freq"
    assert read(root, p0_max) == "816000" and read(root, NPU_MAX) == str(300 * MHZ)
    io = Recording()
    pc, _ = make(tmp_path, io=io)
    pc.start(0.0)
    assert pc.settle(60.0)
    stored = {os.path.relpath(path, root): value for path, value in io.stores}
    assert stored.get(p0_max) == "816000" and stored.get(NPU_MAX) == str(300 * MHZ)
    assert pc.journal is not None and pc.journal.original(p0_max) == "1800000\n"
    pc.stop()
    assert read(root, p0_max) == "1800000"
