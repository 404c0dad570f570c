"""A cpufreq policy whose CPUs are all offline at start is driven once they come online.

While every CPU of a policy is offline the policy is inactive and cpufreq.c answers EBUSY
to every show and store of its attributes. The controller says so once, looks at the
policy again on later ticks, and drives it (journaled, so the exit restores it) once its
CPUs are online; `wattgate probe` says the CPUs are offline.

The tree is the RK3588's (policy6: CPUs 6-7). CPU hotplug cannot be done to a fake tree,
so the EBUSY the kernel gives an inactive policy comes from an AttributeIO that answers it
for policy6's files until the test brings the CPUs "online"; everything else is real."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.power import POLICY_RECHECK_S, PowerController
from wattgate.drivers.inventory import format_inventory, probe
from wattgate.drivers.sysfs import OsIO, Sysfs

POLICY6 = "devices/system/cpu/cpufreq/policy6"


class Hotplug(OsIO):
    """EBUSY for policy6's attributes while its CPUs are offline, as cpufreq.c's show()
    and store() answer for an inactive policy."""

    def __init__(self, root: Path) -> None:
        self.policy = os.path.realpath(root / POLICY6)
        self.offline = True

    def _busy(self, path: Path) -> None:
        if self.offline and os.path.realpath(path).startswith(self.policy + "/"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))

    def read_text(self, path: Path) -> str:
        self._busy(path)
        return super().read_text(path)

    def write_text(self, path: Path, data: str) -> None:
        self._busy(path)
        super().write_text(path, data)


def governor(root: Path, policy: str) -> str:
    return (root / f"devices/system/cpu/cpufreq/{policy}/scaling_governor").read_text().strip()


def test_an_offline_cluster_is_driven_once_online_and_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    io = Hotplug(root)
    c = PowerController(parse_config({"power": {
        "sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
        "profile": "performance"}}), io=io)
    with caplog.at_level(logging.INFO, logger="wattgate.power"):
        c.start(0.0)
        assert c.settle(30)
        assert governor(root, "policy4") == "performance"
        assert governor(root, "policy6") == "schedutil"
        offline = [r for r in caplog.records if "policy6" in r.getMessage()
                   and "offline" in r.getMessage()]
        assert len(offline) == 1 and offline[0].levelno == logging.WARNING

        io.offline = False  # echo 1 > cpu6/online; echo 1 > cpu7/online
        now = 0.0
        while now < 4 * POLICY_RECHECK_S:
            now += 1.0
            c.tick(now)
        assert c.settle(30)
        assert governor(root, "policy6") == "performance"
        assert any("policy6" in r.getMessage() and "online" in r.getMessage()
                   and r.levelno == logging.INFO for r in caplog.records)
        assert len([r for r in caplog.records if "offline" in r.getMessage()]) == 1
    c.stop()
    assert governor(root, "policy6") == "schedutil"  # journaled at its first write


def test_probe_says_the_cpus_of_an_inactive_policy_are_offline(tmp_path: Path) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    text = format_inventory(probe(root, cameras=[], udev_database=False,
                                  fs=Sysfs(root, Hotplug(root))))
    line = next(x for x in text.splitlines() if "policy6" in x)
    assert "offline" in line and "?" not in line and "(none)" not in line
    assert "policy4: CPUs 4,5" in text
