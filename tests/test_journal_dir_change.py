"""A power.journal_dir changed after a run that was killed: the originals in the old
directory's journal still go back (daemon/journal_dirs.py). On a fake RK3588 tree, with a
real forked power controller killed by SIGKILL and the real `wattgate restore`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import tree_snapshot, write_config
from tests.test_restore_command import MOTION, StartRun, board, kill, restore, start_run
from wattgate.config import load_config
from wattgate.daemon.journal_dirs import NOTE_NAME
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JOURNAL_NAME

__all__ = ["start_run"]  # the fixture, used by name


Tree = dict[str, tuple[str, bytes]]


def killed_then_moved(tmp_path: Path, start: StartRun) -> tuple[Path, Tree, Path]:
    """A run on journal_dir `journal` killed with the board changed, then the config edited to
    journal_dir `journal-new`: (the tree, the tree as found, the edited config)."""
    root, journal, config = board(tmp_path)
    (tmp_path / "state").mkdir()
    before = tree_snapshot(root)
    kill(start(config))
    assert tree_snapshot(root) != before and (journal / JOURNAL_NAME).exists()
    moved = write_config(tmp_path / "config.toml", tmp_path, power={
        "sysfs_root": str(root), "journal_dir": str(tmp_path / "journal-new")})
    return root, before, moved


def noted(tmp_path: Path) -> list[str]:
    dirs: list[str] = json.loads((tmp_path / "state" / NOTE_NAME).read_text())["journal_dirs"]
    return dirs


def test_the_next_start_gives_back_the_old_journals_originals(
    start_run: StartRun, tmp_path: Path
) -> None:
    """The start journaled the lowered values it found as the originals, and its clean
    stop left the board lowered for good."""
    root, before, config = killed_then_moved(tmp_path, start_run)
    controller = PowerController(load_config(config))
    controller.start(0.0)
    controller.on_gate(MOTION, 1.0)
    assert tree_snapshot(root) != before  # the new run drives the board again
    controller.stop()
    assert tree_snapshot(root) == before
    assert not (tmp_path / "journal" / JOURNAL_NAME).exists()
    assert noted(tmp_path) == [str(tmp_path / "journal-new")]  # the old one is done with


def test_restore_gives_back_the_old_journals_originals(
    start_run: StartRun, tmp_path: Path
) -> None:
    """`wattgate restore` (ExecStopPost=) with the edited config said "nothing to restore"
    and exited 0."""
    root, before, config = killed_then_moved(tmp_path, start_run)
    out = restore("--config", str(config))
    assert out.returncode == 0, out
    assert "restored " in out.stdout and "nothing to restore" not in out.stdout
    assert tree_snapshot(root) == before
    assert not (tmp_path / "journal" / JOURNAL_NAME).exists()
    again = restore("--config", str(config))
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to restore")


def test_a_live_daemon_on_the_old_journal_dir_keeps_it(
    start_run: StartRun, tmp_path: Path
) -> None:
    """A daemon still running on the old directory (and the board) is left alone."""
    root, journal, config = board(tmp_path)
    (tmp_path / "state").mkdir()
    pid = start_run(config)
    try:
        changed = tree_snapshot(root)
        moved = write_config(tmp_path / "moved.toml", tmp_path, power={
            "sysfs_root": str(root), "journal_dir": str(tmp_path / "journal-new")})
        out = restore("--config", str(moved))
        assert out.returncode == 75 and "driven by another wattgate" in out.stderr, out
        assert tree_snapshot(root) == changed and (journal / JOURNAL_NAME).exists()
    finally:
        kill(pid)


@pytest.mark.parametrize("text", ["{not json", '{"journal_dirs": "/run/x"}', "[1, 2]"])
def test_a_note_that_cannot_be_read_is_said_and_written_again(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, journal, config = board(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / NOTE_NAME).write_text(text)
    before = tree_snapshot(root)
    controller = PowerController(load_config(config))
    with caplog.at_level(logging.WARNING, logger="wattgate"):
        controller.start(0.0)
    controller.stop()
    assert tree_snapshot(root) == before
    said = [r for r in caplog.records if str(tmp_path / "state" / NOTE_NAME) in r.getMessage()]
    assert len(said) == 1, said  # read once a start
    assert noted(tmp_path) == [str(journal)]
