"""A journal's originals go back under the root it recorded, so that root's board lock is
taken too, not only the lock on the config's power.sysfs_root.

When power.sysfs_root changed after a crash, the journal still names the old root. The
board lock was checked on the config's root alone, so `wattgate restore` (and a daemon's
start) wrote the stale originals under the old root while another live daemon drove it,
exited 0, and that daemon, which writes a knob only when its wanted value changes, never
put its settings back. Now a live daemon on the journal's root is "journal held": exit 75
and nothing touched from the command, and at a daemon's start the journal kept and nothing
written under that root.

The live daemon is the real PowerController (what `wattgate run` uses for sysfs, journal
and locks) in this process, on a fake RK3588 tree; the command runs as a real subprocess.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.fixtures.boards import materialize
from tests.test_power_controller import make, read
from tests.test_restore_board_lock import (
    LITTLE_MAX,
    killed_runs_journal,
    refused_while_live_then_restored,
    restore,
)
from wattgate.config import load_config
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JOURNAL_NAME


def moved_config(tmp_path: Path, journal_root: Path) -> tuple[Path, Path]:
    """A killed run's journal of policy0's ceiling (1800000) under ``journal_root``, and a
    config whose power.sysfs_root has moved since to another tree: the journal and the
    config."""
    journal = killed_runs_journal(tmp_path / "old-journal", journal_root)
    moved = materialize("rk3588", tmp_path / "moved-sys")
    run_dir = tmp_path / "moved-run"
    run_dir.mkdir()
    config = write_config(tmp_path / "moved.toml", run_dir,
                          power={"sysfs_root": str(moved), "journal_dir": str(journal.parent)})
    return journal, config


def test_restore_leaves_a_live_daemon_on_the_journals_root_alone(tmp_path: Path) -> None:
    live, root = make(tmp_path)
    live.start(0.0)
    assert read(root, LITTLE_MAX) == "816000"  # the idle ceiling it wants
    journal, config = moved_config(tmp_path, root)
    # once that board is free, its original goes back where it was journaled
    refused_while_live_then_restored(live, root, journal, config,
                                     f"another wattgate (pid {os.getpid()}) drives {root}")


def test_a_daemons_start_keeps_the_journal_of_a_root_another_daemon_drives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live, root = make(tmp_path)
    live.start(0.0)
    driven = read(root, LITTLE_MAX)
    journal, config = moved_config(tmp_path, root)
    text = journal.read_bytes()

    starting = PowerController(load_config(config))
    try:
        with caplog.at_level(logging.WARNING, logger="wattgate"):
            starting.start(0.0)
        assert read(root, LITTLE_MAX) == driven  # the live daemon's setting stays
        assert journal.read_bytes() == text  # its original waits for that board to be free
        assert not starting.writes
        assert f"another wattgate (pid {os.getpid()}) drives {root}" in caplog.text
    finally:
        starting.stop()
        live.stop()


def test_a_journal_root_that_is_the_config_root_by_another_name_is_restored(
    tmp_path: Path,
) -> None:
    """The same directory under another name (a symbolic link) is the board this command
    has locked already, not one another daemon drives."""
    root = materialize("rk3588", tmp_path / "sys")
    (root / LITTLE_MAX).write_text("816000\n")
    alias = tmp_path / "sys-link"
    alias.symlink_to(root)
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / JOURNAL_NAME).write_text(json.dumps({"version": 1, "root": str(alias),
        "entries": [{"attribute": LITTLE_MAX, "original": "1800000\n"}]}))
    config = write_config(tmp_path / "config.toml", tmp_path,
                          power={"sysfs_root": str(root), "journal_dir": str(directory)})
    done = restore(config)
    assert done.returncode == 0, done.stderr
    assert read(root, LITTLE_MAX) == "1800000"
