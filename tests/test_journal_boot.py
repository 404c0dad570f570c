"""A sysfs journal names the boot it was written on. sysfs lives in memory: after a reboot
the board has its own values again, so a journal_dir that outlived the reboot (one not
under /run) must not write an earlier boot's originals over them. A fake tree outlives a
reboot with the daemon's values in it, so its journal is restored whatever the boot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import tree_snapshot
from tests.fixtures.boards import materialize
from wattgate.daemon.boot import boot_id
from wattgate.daemon.rollback import JOURNAL_NAME, JournaledWriter, SysfsJournal
from wattgate.drivers.sysfs import OsIO, Sysfs

GOVERNOR = "devices/system/cpu/cpufreq/policy0/scaling_governor"
EARLIER_BOOT = "00000000-0000-4000-8000-000000000000"


class Untouchable(OsIO):
    """IO over the machine's real /sys that records and refuses every access: the journal
    of an earlier boot must neither read nor write it."""

    def __init__(self) -> None:
        self.touched: list[Path] = []

    def read_text(self, path: Path) -> str:
        self.touched.append(path)
        raise PermissionError(13, "not in this test", str(path))

    def write_text(self, path: Path, data: str) -> None:
        self.touched.append(path)
        raise PermissionError(13, "not in this test", str(path))


def write_journal(state: Path, root: str, boot: str) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    path = state / JOURNAL_NAME
    path.write_text(json.dumps({
        "version": 1, "root": root, "boot_id": boot,
        "entries": [{"attribute": GOVERNOR, "original": "ondemand\n"}],
    }))
    return path


def test_a_saved_journal_names_this_boot(tmp_path: Path) -> None:
    this_boot = boot_id()
    assert this_boot, "Linux gives every boot an id in /proc/sys/kernel/random/boot_id"
    journal = SysfsJournal(tmp_path / "state", Sysfs(materialize("rk3588", tmp_path / "sys")))
    JournaledWriter(journal).write(GOVERNOR, "performance")
    assert json.loads(journal.path.read_text())["boot_id"] == this_boot


def test_an_earlier_boots_journal_under_sys_is_dropped_unrestored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_journal(tmp_path / "state", "/sys", EARLIER_BOOT)
    io = Untouchable()
    with caplog.at_level(logging.WARNING, "wattgate.rollback"):
        report = SysfsJournal(tmp_path / "state", Sysfs("/sys", io)).restore_pending()
    assert io.touched == []
    assert report.ok and report.restored == [] and report.failed == {}
    assert not path.exists()
    assert "from an earlier boot" in caplog.text and EARLIER_BOOT in caplog.text


def changed_then_journal_edited(tmp_path: Path, boot: Optional[str]) -> Path:
    """A fake board whose governor the daemon changed, its journal's boot id then set to
    `boot` (None: removed, as a journal written before boot ids were kept); the root."""
    root = materialize("rk3588", tmp_path / "sys")
    JournaledWriter(SysfsJournal(tmp_path / "state", Sysfs(root))).write(GOVERNOR, "performance")
    path = tmp_path / "state" / JOURNAL_NAME
    data = json.loads(path.read_text())
    data.pop("boot_id")
    if boot is not None:
        data["boot_id"] = boot
    path.write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("boot", [EARLIER_BOOT, None], ids=["earlier-boot", "no-boot-id"])
def test_a_fake_trees_journal_is_restored_whatever_its_boot(
    tmp_path: Path, boot: Optional[str]
) -> None:
    pristine = tree_snapshot(materialize("rk3588", tmp_path / "pristine"))
    root = changed_then_journal_edited(tmp_path, boot)
    report = SysfsJournal(tmp_path / "state", Sysfs(root)).restore_pending()
    assert report.restored == [GOVERNOR]
    assert tree_snapshot(root) == pristine
