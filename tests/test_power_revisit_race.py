"""A structural reload while the tick looks at the cpufreq policies again.

The tick (an executor thread) rediscovers the policies outside the lock when CPUs were
offline (_revisit_policies); a reload naming another sysfs_root runs on a thread of its
own and sets the controller up afresh meanwhile. What the tick read of the old root must
not be installed into the new setup: the controller would drive the old board's policies
under the new root.

The old root is an RK3588 (policy6 offline at start, then online); the new one a Pi 5
(policy0 only). CPU hotplug cannot be done to a fake tree, so the EBUSY of an inactive
policy comes from an AttributeIO; the same AttributeIO holds the tick's read of the old
root's policy6 until the reload has run, which makes the interleaving certain. Everything
else is real: files, journal, writer thread.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Optional

from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.power import POLICY_RECHECK_S, PowerController
from wattgate.drivers.sysfs import OsIO

POLICY6 = "devices/system/cpu/cpufreq/policy6"
# A hang guard for the waits below, never a timing.
HANG_S = 30.0


class HeldHotplug(OsIO):
    """EBUSY for the old root's policy6 while its CPUs are offline; once ``hold`` is armed,
    the first read of policy6 waits until the test has run its reload."""

    def __init__(self, root: Path) -> None:
        self.policy = os.path.realpath(root / POLICY6)
        self.offline = True
        self.hold = False
        self.reading = threading.Event()  # the tick is in its read of policy6
        self.reloaded = threading.Event()  # the reload is done: the read may return

    def read_text(self, path: Path) -> str:
        if os.path.realpath(path).startswith(self.policy + "/"):
            if self.hold:
                self.hold = False
                self.reading.set()
                assert self.reloaded.wait(HANG_S)
            if self.offline:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        return super().read_text(path)


def config(root: Path, journal: Path) -> dict[str, dict[str, str]]:
    return {"power": {"sysfs_root": str(root), "journal_dir": str(journal),
                      "profile": "performance"}}


def test_a_structural_reload_during_the_policy_revisit_keeps_the_new_board(
    tmp_path: Path,
) -> None:
    old = materialize("rk3588", tmp_path / "rk3588")
    new = materialize("rpi5", tmp_path / "rpi5")
    io = HeldHotplug(old)
    c = PowerController(parse_config(config(old, tmp_path / "journal-rk3588")), io=io)
    c.start(0.0)
    assert c.settle(HANG_S)

    io.offline = False  # policy6's CPUs come online: the next look takes it in
    io.hold = True
    failure: list[Optional[BaseException]] = [None]

    def tick() -> None:
        try:
            c.tick(POLICY_RECHECK_S)
        except BaseException as exc:  # shown by the assertion below
            failure[0] = exc

    ticker = threading.Thread(target=tick, name="tick")
    ticker.start()
    try:
        assert io.reading.wait(HANG_S)
        c.reload(parse_config(config(new, tmp_path / "journal-rpi5")), POLICY_RECHECK_S)
    finally:
        io.reloaded.set()
        ticker.join(HANG_S)
    assert not ticker.is_alive() and failure[0] is None
    assert c.settle(HANG_S)

    assert sorted(c._policies) == ["devices/system/cpu/cpufreq/policy0"]
    assert [cpu.name for cpu in c.caps.cpus] == ["policy0"]
    assert not any("policy4" in key or "policy6" in key for key in c.driven)
    assert not c.failed
    c.stop()
