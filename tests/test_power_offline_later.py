"""A cpufreq policy whose CPUs go offline after the start, and come back; and what an
offline cluster counts in the power estimate.

All CPUs are online at the start; then a cluster is hot-unplugged: cpufreq.c answers
EBUSY to every show and store of the inactive policy's attributes, and the kernel lists
the CPUs in devices/system/cpu/offline. The controller says once that the policy is
offline, stops driving it, and drives it again, at the settings wanted then, once its
CPUs are back: the same path as a cluster offline at start (test_cpufreq_offline.py).

The tree is the RK3588's (policy6: CPUs 6-7). CPU hotplug cannot be done to a fake tree,
so the EBUSY comes from an AttributeIO (as in test_cpufreq_offline.py), and the test
writes the offline file as the kernel would; everything else is real.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from tests.test_cpufreq_offline import Hotplug, governor
from wattgate.boards import energy_model
from wattgate.config import parse_config
from wattgate.daemon.power import POLICY_RECHECK_S, PowerController
from wattgate.daemon.power_inputs import Inputs
from wattgate.policies.energy import CpuLoad, PowerState, board_power, estimate

POLICY6 = "devices/system/cpu/cpufreq/policy6"
OFFLINE = "devices/system/cpu/offline"
HANG_S = 30.0  # a hang guard for settle(), never a timing


def controller(tmp_path: Path) -> tuple[PowerController, Path, Hotplug]:
    root = materialize("rk3588", tmp_path / "sys")
    io = Hotplug(root)
    io.offline = False  # every CPU online at the start
    c = PowerController(parse_config({"power": {
        "sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
        "profile": "performance"}}), io=io)
    return c, root, io


def ticks(c: PowerController, start: float, seconds: float) -> float:
    """Tick once a second for ``seconds`` from ``start``; the time reached."""
    now = start
    while now < start + seconds:
        now += 1.0
        c.tick(now)
    assert c.settle(HANG_S)
    return now


def offline_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if "policy6" in r.getMessage() and "offline" in r.getMessage()]


def test_a_refused_write_of_an_unplugged_cluster_is_seen_as_offline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the EBUSY of a write tells (no offline file on this tree): seen all the same."""
    c, root, io = controller(tmp_path)
    with caplog.at_level(logging.INFO, logger="wattgate.power"):
        c.start(0.0)
        assert c.settle(HANG_S)
        assert governor(root, "policy6") == "performance"
        assert not offline_lines(caplog)

        io.offline = True  # echo 0 > cpu6/online; echo 0 > cpu7/online
        c.pin("powersave", "test")  # a write to policy6 now: EBUSY
        now = ticks(c, 0.0, 4 * POLICY_RECHECK_S)
        assert len(offline_lines(caplog)) == 1
        assert not c._policies[POLICY6].active
        refused = [r for r in caplog.records if "cannot set" in r.getMessage()]

        io.offline = False  # the CPUs are back
        ticks(c, now, 4 * POLICY_RECHECK_S)
        assert c._policies[POLICY6].active
        assert governor(root, "policy6") == governor(root, "policy4") != "performance"
        assert any("policy6" in r.getMessage() and "came online" in r.getMessage()
                   for r in caplog.records)
        assert len(offline_lines(caplog)) == 1
        # no write was tried again while the cluster was offline
        assert [r for r in caplog.records if "cannot set" in r.getMessage()] == refused
    c.stop()
    assert governor(root, "policy6") == "schedutil"


def test_an_unplugged_cluster_is_seen_on_the_tick_without_a_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing to write: the kernel's list of offline CPUs tells the tick."""
    c, root, io = controller(tmp_path)
    with caplog.at_level(logging.INFO, logger="wattgate.power"):
        c.start(0.0)
        assert c.settle(HANG_S)

        io.offline = True
        (root / OFFLINE).write_text("6-7\n")
        now = ticks(c, 0.0, 2.0)
        assert len(offline_lines(caplog)) == 1
        assert not c._policies[POLICY6].active

        io.offline = False
        (root / OFFLINE).write_text("\n")
        c.pin("powersave", "test")
        ticks(c, now, 2 * POLICY_RECHECK_S)
        assert c._policies[POLICY6].active
        assert governor(root, "policy6") == governor(root, "policy4") != "performance"
    c.stop()
    assert governor(root, "policy6") == "schedutil"


def test_the_estimate_counts_an_offline_cluster_as_drawing_nothing(tmp_path: Path) -> None:
    """policy6 offline at start: its CPUs are in no idle state but powered off, so the
    estimate counts no watts for it, where it counted the cluster idle at its top OPP. The
    tick's inputs are given (what policy6 reads is EBUSY: no frequency), not read, so the
    figures do not depend on this machine's CPU load."""
    c, _, io = controller(tmp_path)
    io.offline = True
    c.start(0.0)
    assert c.settle(HANG_S)
    model = c.energy_model
    assert model is not None and "policy6" in model.clusters
    khz = {"policy0": 408000, "policy4": 408000, "policy6": None}
    c._integrate(1.0, Inputs(cpu_khz=khz, cpu_busy={"policy0": 0.5}), None)
    assert c.last_estimate is not None
    online = (model.clusters["policy0"].watts(408000, 0.5)
              + model.clusters["policy4"].watts(408000, 0.0))
    assert c.last_estimate.cpu == pytest.approx(online)
    assert c.watts()["estimate"]["cpu"] == pytest.approx(online, abs=1e-4)

    io.offline = False  # back online: counted again, idle at what it reads
    ticks(c, 0.0, 2 * POLICY_RECHECK_S)
    khz["policy6"] = 408000
    c._integrate(20.0, Inputs(cpu_khz=khz, cpu_busy={"policy0": 0.5}), None)
    assert c.last_estimate.cpu == pytest.approx(
        online + model.clusters["policy6"].watts(408000, 0.0))
    c.stop()


def test_an_offline_cluster_draws_nothing_in_the_model() -> None:
    """estimate(): an offline policy is 0 W whatever its last frequency or load."""
    model = board_power("rk3588", energy_model("rk3588"))
    idle = CpuLoad(408000, 0.0)
    online = estimate(model, PowerState(cpus={"policy0": idle, "policy4": idle,
                                              "policy6": idle}))
    offline = estimate(model, PowerState(cpus={"policy0": idle, "policy4": idle,
                                               "policy6": CpuLoad(None, 0.0, online=False)}))
    assert online.cpu - offline.cpu == pytest.approx(
        model.clusters["policy6"].watts(408000, 0.0))
    assert offline.total == pytest.approx(online.total - (online.cpu - offline.cpu))
