"""`wattgate simulate` on input that does not fit, and stopped midway: real videos, real
processes, a private TMPDIR to see what is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import tree_snapshot, write_config
from tests.fixtures.boards import materialize
from wattgate.config import load_config
from wattgate.daemon import journal_dirs
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JOURNAL_NAME, JournaledWriter, SysfsJournal
from wattgate.drivers.sysfs import Sysfs
from wattgate.simulate import SimulateError, run_one, scene_footage, video_footage
from wattgate.stop_signals import StopSignal


def write_video(path: Path, frames: int) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def test_an_event_past_the_end_of_the_video_is_refused(tmp_path: Path) -> None:
    """Labels of another video, or in milliseconds: no strategy can catch such an event, and
    every one was reported with recall 0, always_on included, with exit 0."""
    video = write_video(tmp_path / "short.avi", 30)
    labels = tmp_path / "labels.json"
    labels.write_text('{"fps": 15, "events": [[10, 12], [500, 600]]}')
    with pytest.raises(SimulateError, match=r"events\[1\]: frame 500 .*30 frames"):
        video_footage(video, labels)
    res = subprocess.run(
        [sys.executable, "-m", "wattgate.cli", "simulate", "--board", "rk3588", "--video",
         str(video), "--labels", str(labels), "--model-ms", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(labels) in res.stderr and "events[1]" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_an_event_running_past_the_end_is_kept(tmp_path: Path) -> None:
    """A recording that stops mid-event: the event's start is in it, so it can be caught."""
    video = write_video(tmp_path / "short.avi", 30)
    labels = tmp_path / "labels.json"
    labels.write_text('{"fps": 15, "events": [[29, 40]]}')
    assert video_footage(video, labels).events == ((29, 40),)


def test_simulate_stopped_by_sigterm_removes_its_temporary_directory(tmp_path: Path) -> None:
    """`timeout 60 wattgate simulate` and systemd stop with SIGTERM; SIGINT already cleaned up."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattgate.cli", "simulate", "--board", "rk3588", "--scene",
         "office", "--model-ms", "1"],
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(tmp.glob("wattgate-sim-*/policy")):  # the first run has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert list(tmp.iterdir()) == []


def test_a_simulation_leaves_the_real_boards_journals_alone(tmp_path: Path) -> None:
    """The simulated controller took the config's daemon.state_dir as it was, and so the
    journal_dirs noted there (daemon/journal_dirs.py): a simulation run with the service's
    config after a crash gave the real board's journal back, and noted its own temporary
    journal_dir there in place of the real one."""
    root = materialize("rk3588", tmp_path / "sys")
    journal, state = tmp_path / "journal", tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path / "config.toml", tmp_path, power={
        "sysfs_root": str(root), "journal_dir": str(journal)})
    governor = "class/devfreq/fdab0000.npu/governor"
    assert JournaledWriter(SysfsJournal(journal, Sysfs(root))).write(governor, "performance")
    journal_dirs.note(state, [str(tmp_path / "journal-before"), str(journal)], [])
    crashed, note = tree_snapshot(root), (state / journal_dirs.NOTE_NAME).read_text()
    run_one(load_config(config), "rk3588", scene_footage("office"), 1.0, tmp_path / "work")
    assert tree_snapshot(root) == crashed and (journal / JOURNAL_NAME).exists()
    assert (state / journal_dirs.NOTE_NAME).read_text() == note


def test_a_stop_during_the_controllers_start_stops_its_writer_and_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (StopSignal) raised while the controller's start waited for its first writes
    left the writer thread running and the board as it was set: the writer went on writing
    the simulated board and its journal while the temporary directory was being removed,
    and the removal failed."""
    settle = PowerController.settle

    def stopped(self: PowerController, timeout: float) -> bool:
        assert settle(self, timeout)  # the start's writes are made: the signal comes now
        raise StopSignal(signal.SIGTERM)

    monkeypatch.setattr(PowerController, "settle", stopped)
    work = tmp_path / "work"
    board = materialize("rk3588", tmp_path / "board")
    with pytest.raises(StopSignal):
        run_one(load_config(write_config(tmp_path / "config.toml", tmp_path)), "rk3588",
                scene_footage("office"), 1.0, work)
    assert not any(t.name == "wattgate-power-writer" for t in threading.enumerate())
    assert tree_snapshot(work / "sys") == tree_snapshot(board)  # every original written back
    assert not (work / "journal" / JOURNAL_NAME).exists()
