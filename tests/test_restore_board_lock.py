"""`wattgate restore` leaves a board a live daemon drives alone, whatever journal it is given.

The daemon's start locks power.sysfs_root itself besides its journal_dir (one daemon per
board). The restore took only the journal lock, so a stale journal of another config (a
`wattgate run --config test.toml` killed mid-run) was written back under the live service,
which writes a knob only when its wanted value changes: the board ran at the stale value
while the service's status said value != target. The restore takes the board's lock
first, and touches nothing while another process holds it.

The live daemon is the real PowerController (what `wattgate run` uses for sysfs, journal
and locks) in this process; the command runs as a real subprocess on a fake RK3588 tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_config
from tests.fixtures.boards import materialize
from tests.test_power_controller import CPU, make, read
from wattgate.cli_power import EXIT_HELD
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JOURNAL_NAME

ROOT = Path(__file__).resolve().parent.parent
LITTLE_MAX = f"{CPU}/policy0/scaling_max_freq"


def restore(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", "restore", "--config",
                           str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def killed_runs_journal(directory: Path, root: Path) -> Path:
    """The journal a run killed mid-way left in ``directory``: one original under ``root``,
    policy0's ceiling (1800000)."""
    directory.mkdir()
    journal = directory / JOURNAL_NAME
    journal.write_text(json.dumps({"version": 1, "root": str(root), "entries": [
        {"attribute": LITTLE_MAX, "original": "1800000\n"}]}))
    return journal


def refused_while_live_then_restored(live: PowerController, root: Path, journal: Path,
                                     config: Path, says: str) -> None:
    """`wattgate restore --config config` while ``live`` drives ``root``: refused (75,
    saying ``says``), the live daemon's setting and the journal left as they were; once
    ``live`` stops, the journal's original goes back and the journal goes."""
    driven = read(root, LITTLE_MAX)
    text = journal.read_bytes()
    refused = restore(config)
    assert refused.returncode == EXIT_HELD == 75, refused.stderr
    assert refused.stdout == ""
    assert says in refused.stderr
    assert "nothing restored" in refused.stderr and "Traceback" not in refused.stderr
    assert read(root, LITTLE_MAX) == driven
    assert journal.read_bytes() == text  # its original waits for a restore that may run

    live.stop()  # the board is free: now the journal's original can go back
    done = restore(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["restored", LITTLE_MAX]
    assert read(root, LITTLE_MAX) == "1800000"
    assert not journal.exists()


def stale_journal(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    """A config of its own on the same board, whose journal_dir a killed run left with one
    original in it (policy0's ceiling, 1800000): the journal and the config."""
    journal = killed_runs_journal(tmp_path / "test-journal", root)
    run_dir = tmp_path / "test-run"
    run_dir.mkdir()
    config = write_config(tmp_path / "test.toml", run_dir,
                          power={"sysfs_root": str(root), "journal_dir": str(journal.parent)})
    return journal, config


def test_a_stale_journal_is_not_restored_under_a_live_daemon_of_another_config(
    tmp_path: Path,
) -> None:
    materialize("rk3588", tmp_path / "sys")
    live, root = make(tmp_path)  # the service: journal_dir tmp_path/journal
    live.start(0.0)
    assert read(root, LITTLE_MAX) == "816000"  # the idle ceiling it wants
    journal, config = stale_journal(tmp_path, root)
    refused_while_live_then_restored(
        live, root, journal, config,
        f"power.sysfs_root {root} is driven by another wattgate (pid {os.getpid()})")


def test_a_journal_nested_too_deep_is_set_aside_as_unusable(tmp_path: Path) -> None:
    """json.loads raises RecursionError, not ValueError, for arrays nested past the
    interpreter's recursion limit: `wattgate restore` ended in a traceback instead of
    setting the journal aside and saying so, as it does for any other unreadable one."""
    root = materialize("rk3588", tmp_path / "sys")
    journal, config = stale_journal(tmp_path, root)
    nested = "[" * 200_000 + "]" * 200_000
    journal.write_text(nested)
    before = read(root, LITTLE_MAX)

    done = restore(config)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    aside = journal.with_name(f"{JOURNAL_NAME}.corrupt")
    assert f"unusable sysfs journal {journal}" in done.stderr
    assert f"kept as {aside}" in done.stderr
    assert aside.read_text() == nested and not journal.exists()
    assert read(root, LITTLE_MAX) == before
