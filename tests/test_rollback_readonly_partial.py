"""A crashed run's journal in a journal_dir remounted read-only still gives its good
originals back, even when some of its entries are bad or the whole of it is torn.

With a bad entry, the journal's text used to be copied aside (`.corrupt`) before the good
entries were kept: in a directory that cannot be written that copy failed, and the error
(naming a `.corrupt` file that does not exist) stopped both the daemon's start and
`wattgate restore` before any original was written back. A torn journal that cannot be
moved aside is refused by name, the journal itself.

The directory is made read-only for real: a read-only bind mount in a private mount
namespace (`unshare -m`), as a read-only remount after a crash leaves it. A chmod would not
do, root writes through it. The sysfs tree is a fake RK3588 outside that mount."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.fixtures.boards import materialize
from wattgate.daemon.rollback import JOURNAL_NAME, LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
GOVERNOR = "devices/system/cpu/cpufreq/policy0/scaling_governor"
BAD = {"attribute": "/etc/bad", "original": "x"}


@pytest.fixture(autouse=True)
def _mount_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a read-only bind mount of its own")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m not permitted here: {probe.stderr.strip()}")


def crashed_run(tmp_path: Path, *extra: dict[str, str]) -> tuple[Path, Path, Path]:
    """A board whose policy0 governor a killed run left at performance (its original
    schedutil in the journal, followed by ``extra`` entries): the tree, the journal_dir
    and a config naming both."""
    root = materialize("rk3588", tmp_path / "sys")
    (root / GOVERNOR).write_text("performance\n")
    directory = tmp_path / "journal"
    directory.mkdir()
    entries = [{"attribute": GOVERNOR, "original": "schedutil\n"}, *extra]
    (directory / JOURNAL_NAME).write_text(
        json.dumps({"version": 1, "root": str(root), "entries": entries}))
    (directory / LOCK_NAME).touch()
    config = write_config(tmp_path / "config.toml", tmp_path,
                          power={"sysfs_root": str(root), "journal_dir": str(directory)})
    return root, directory, config


def read_only(directory: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv with ``directory`` mounted read-only over itself, seen by argv alone."""
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           str(directory), *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def restore(directory: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return read_only(directory, sys.executable, "-m", "wattgate.cli", "restore",
                     "--config", str(config))


def test_restore_gives_back_the_good_entries_and_names_the_bad_one(tmp_path: Path) -> None:
    root, directory, config = crashed_run(tmp_path, BAD)
    out = restore(directory, config)
    assert (root / GOVERNOR).read_text() == "schedutil\n", out.stderr
    assert f"restored {GOVERNOR}" in out.stdout
    # An original was not given back: not a clean 0, and the skipped entry is in the
    # message itself, since no copy of the journal could be kept.
    assert out.returncode == 1, out
    assert "'/etc/bad'" in out.stderr and '"original": "x"' in out.stderr, out.stderr
    assert ".corrupt" not in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in directory.iterdir()) == [JOURNAL_NAME, LOCK_NAME]


def test_the_daemons_start_gives_back_the_good_entries(tmp_path: Path) -> None:
    root, directory, config = crashed_run(tmp_path, BAD)
    start = textwrap.dedent(f"""
        from pathlib import Path
        from wattgate.config import load_config
        from wattgate.daemon.power import PowerController
        controller = PowerController(load_config(Path({str(config)!r})))
        controller.start(0.0)
        print("writes", controller.writes)
    """)
    out = read_only(directory, sys.executable, "-c", start)
    assert out.returncode == 0, out.stderr
    assert (root / GOVERNOR).read_text() == "schedutil\n", out.stderr
    assert "writes False" in out.stdout  # nothing new without a journal that can be saved
    assert "'/etc/bad'" in out.stderr and ".corrupt" not in out.stderr, out.stderr


def test_a_torn_journal_that_cannot_be_moved_aside_is_refused_by_its_name(
    tmp_path: Path,
) -> None:
    root, directory, config = crashed_run(tmp_path)
    journal = directory / JOURNAL_NAME
    journal.write_text('{"version": 1, "root": "/sy')
    out = restore(directory, config)
    assert out.returncode == 1, out
    assert f"sysfs journal {journal} is unusable" in out.stderr, out.stderr
    assert "cannot be moved aside" in out.stderr and "Read-only file system" in out.stderr
    assert ".corrupt" not in out.stderr and "Traceback" not in out.stderr
    assert journal.read_text() == '{"version": 1, "root": "/sy'  # left for a look
    assert (root / GOVERNOR).read_text() == "performance\n"
