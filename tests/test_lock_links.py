"""Lock files that are symbolic links gone wrong, for every lock the daemon takes.

The event log's `events.db.lock` was named with its target when it was a broken link
(tests/test_eventlog_paths.py); the sysfs journal's `sysfs-journal.lock` was not: with it
left dangling, power control went off with "power.journal_dir ... unusable ([Errno 2] No
such file or directory: '.../sysfs-journal.lock')", and `wattgate restore` said the same,
naming neither the link's target nor what was wrong with it. Both locks now go through one
diagnosis (pidlock.expect_lock_file), so the same link reads the same in either place, and
a JournalError still turns power control off with nothing written to sysfs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, FaceVideo, run_as, tree_snapshot
from tests.fixtures.boards import materialize
from tests.test_restore_command import board
from wattgate.config import EXIT_CONFIG, load_config
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.pathcheck import PathError
from wattgate.daemon.pidlock import lock_file
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import (
    JOURNAL_NAME,
    LOCK_NAME,
    JournaledWriter,
    JournalError,
    JournalHeld,
    JournalLock,
    SysfsJournal,
    take_over,
)
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.gating import GateVerdict

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian
ROOT = Path(__file__).resolve().parent.parent
NPU_GOVERNOR = "class/devfreq/fdab0000.npu/governor"
MOTION = GateVerdict(True, "motion", 0.1, True, ((0, 0, 10, 10),))
StartDaemon = Callable[..., DaemonProcess]


def dangling(journal: Path, tmp_path: Path) -> tuple[Path, Path]:
    """journal_dir with its lock linked to a data partition that is not mounted: the link
    and its target, whose directory is not there."""
    journal.mkdir(exist_ok=True)
    target = tmp_path / "data/wattgate" / LOCK_NAME
    (journal / LOCK_NAME).symlink_to(target)
    return journal / LOCK_NAME, target


def dangling_message(lock: Path, target: Path) -> str:
    return (f"{lock}: is a symbolic link to {target}, whose directory {target.parent} does "
            "not exist")


# -- 1. the journal's lock names the link and its target ------------------------------------


def test_a_journal_lock_linked_into_a_directory_that_does_not_exist_is_named(
    tmp_path: Path,
) -> None:
    lock, target = dangling(tmp_path / "journal", tmp_path)
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    with pytest.raises(JournalError) as info:
        take_over(tmp_path / "journal", fs, create=True)
    assert str(info.value) == dangling_message(lock, target)
    assert not isinstance(info.value, JournalHeld)  # not "stop the other daemon"
    assert lock.is_symlink() and not target.parent.exists()  # nothing made anywhere
    assert sorted(p.name for p in (tmp_path / "journal").iterdir()) == [LOCK_NAME]


def test_a_relative_link_is_named_as_it_reads_and_its_directory_as_resolved(
    tmp_path: Path,
) -> None:
    (tmp_path / LOCK_NAME).symlink_to(f"gone/{LOCK_NAME}")
    with pytest.raises(JournalError) as info:
        JournalLock(tmp_path).acquire()
    assert str(info.value) == (
        f"{tmp_path / LOCK_NAME}: is a symbolic link to gone/{LOCK_NAME}, whose directory "
        f"{tmp_path.resolve() / 'gone'} does not exist")


@pytest.mark.parametrize("create", [True, False])
def test_a_journal_lock_link_that_loops_is_named(tmp_path: Path, create: bool) -> None:
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "loop")
    (tmp_path / "loop").symlink_to(tmp_path / LOCK_NAME)
    with pytest.raises(JournalError) as info:
        JournalLock(tmp_path).acquire(create=create)
    assert str(info.value) == (f"{tmp_path / LOCK_NAME}: is a symbolic link to "
                               f"{tmp_path / 'loop'}, which never resolves: a loop of "
                               "symbolic links")


@pytest.mark.parametrize("create", [True, False])
def test_a_journal_lock_linked_to_a_directory_is_named(tmp_path: Path, create: bool) -> None:
    """Read-only (create=False) a directory opened and was flocked as if it were the lock."""
    (tmp_path / "data").mkdir()
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "data")
    with pytest.raises(JournalError) as info:
        JournalLock(tmp_path).acquire(create=create)
    assert str(info.value) == (f"{tmp_path / LOCK_NAME}: is a symbolic link to "
                               f"{tmp_path / 'data'}, which is a directory, not a file")


def test_a_journal_lock_link_through_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "data" / LOCK_NAME)
    with pytest.raises(JournalError) as info:
        JournalLock(tmp_path).acquire()
    assert str(info.value) == (f"{tmp_path / LOCK_NAME}: is a symbolic link to "
                               f"{tmp_path / 'data' / LOCK_NAME}, which cannot be followed: "
                               "Not a directory")


def test_a_directory_where_the_journal_lock_goes_is_named(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(JournalError) as info:
        JournalLock(tmp_path).acquire(create=False)
    assert str(info.value) == f"{tmp_path / LOCK_NAME}: is a directory, not a file"


def test_a_dangling_journal_lock_is_no_lock_to_skip_read_only(tmp_path: Path) -> None:
    """create=False (a journal_dir this process cannot write) took a missing lock file for
    one no daemon could have made; a link points somewhere else, which another process (in
    another mount namespace, or once the partition is back) may have made and hold."""
    lock, target = dangling(tmp_path / "journal", tmp_path)
    with pytest.raises(JournalError) as info:
        JournalLock(tmp_path / "journal").acquire(create=False)
    assert str(info.value) == dangling_message(lock, target)


def test_a_journal_lock_linked_to_a_file_yet_to_be_made_is_made_there(tmp_path: Path) -> None:
    """A link into a directory that is there is a lock like any other: the file is made
    where it points, the link stays, and a second holder is refused."""
    (tmp_path / "data").mkdir()
    lock = tmp_path / "journal" / LOCK_NAME
    lock.parent.mkdir()
    lock.symlink_to(tmp_path / "data" / LOCK_NAME)
    first = JournalLock(tmp_path / "journal")
    first.acquire()
    try:
        assert lock.is_symlink() and (tmp_path / "data" / LOCK_NAME).is_file()
        with pytest.raises(JournalHeld, match="is held by another wattgate process"):
            JournalLock(tmp_path / "journal").acquire()
    finally:
        first.release()


def test_a_journal_lock_linked_to_a_file_not_made_read_only_locks_nothing(
    tmp_path: Path,
) -> None:
    """As for a lock file that is not there: nobody made it, so nobody holds it."""
    (tmp_path / "data").mkdir()
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "data" / LOCK_NAME)
    lock = JournalLock(tmp_path)
    lock.acquire(create=False)
    assert not lock.held and not (tmp_path / "data" / LOCK_NAME).exists()


def test_a_journal_lock_linked_into_a_directory_the_daemon_may_not_write_is_named(
    reachable_tmp: Path,
) -> None:
    """The lock could not be made where the link points: "Permission denied", of the link."""
    journal, data = reachable_tmp / "journal", reachable_tmp / "data"
    journal.mkdir()
    data.mkdir(mode=0o755)
    os.chown(journal, NOBODY, NOBODY)
    lock = journal / LOCK_NAME
    lock.symlink_to(data / LOCK_NAME)

    def acquire() -> str:
        try:
            JournalLock(journal).acquire()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "locked"

    report = run_as(NOBODY, NOBODY, acquire)
    assert report == (
        f"JournalError: {data}: is not writable by uid {NOBODY} (owner uid 0, gid 0, mode "
        f"0755); {lock} (a symbolic link to {data / LOCK_NAME}, not there yet) is made in it"
    ), report


# -- 2. one diagnosis for both locks --------------------------------------------------------


@pytest.mark.parametrize("kind", ["dangling", "loop", "directory"])
def test_the_event_logs_lock_and_the_journals_read_the_same(tmp_path: Path, kind: str) -> None:
    """The same broken link gives the same words whichever lock it is: one diagnosis
    (pidlock), not a copy of it per lock."""
    state = tmp_path / "state"
    state.mkdir()
    names = {"events.db.lock": "event log", LOCK_NAME: "journal"}
    for name in names:
        link = state / name
        if kind == "dangling":
            link.symlink_to(tmp_path / "gone" / name)
        elif kind == "loop":
            link.symlink_to(state / f"{name}.loop")
            (state / f"{name}.loop").symlink_to(link)
        else:
            (tmp_path / name).mkdir()
            link.symlink_to(tmp_path / name)
    with pytest.raises(PathError) as from_pidlock:
        lock_file(str(state / LOCK_NAME))
    with pytest.raises(JournalError) as journal:
        JournalLock(state).acquire()
    with pytest.raises(OSError) as eventlog:
        EventLog(str(state / "events.db"))
    assert str(journal.value) == str(from_pidlock.value)
    assert str(eventlog.value) == str(journal.value).replace(LOCK_NAME, "events.db.lock")
    assert journal.value.errno == eventlog.value.errno


# -- 3. the daemon's start: power control off, nothing written ------------------------------


def crashed(root: Path, journal: Path) -> dict[str, str]:
    """What a run killed mid-run leaves: the governor changed, its original in the journal
    (no restore). Returns the journal's text and the governor's value."""
    writer = JournaledWriter(SysfsJournal(journal, Sysfs(root)))
    assert writer.write(NPU_GOVERNOR, "performance")
    return {"journal": (journal / JOURNAL_NAME).read_text(),
            "governor": (root / NPU_GOVERNOR).read_text()}


def start_refused(root: Path, config: Path, caplog: pytest.LogCaptureFixture) -> str:
    """Start and stop the power controller of config, which cannot use its journal_dir:
    nothing is written to the board, not even the active settings a motion asks for.
    Returns the one line logged about the journal_dir."""
    before = tree_snapshot(root)
    controller = PowerController(load_config(config))
    with caplog.at_level(logging.ERROR, logger="wattgate"):
        controller.start(0.0)
    try:
        assert controller.journal is None and not controller.writes
        controller.on_gate(MOTION, 1.0)  # the active settings would be written now
        assert tree_snapshot(root) == before
        assert controller.status()["writes"] is False
    finally:
        controller.stop()
    assert tree_snapshot(root) == before
    (message,) = [r.getMessage() for r in caplog.records if "power.journal_dir" in r.message]
    return message


def test_a_start_with_a_dangling_journal_lock_turns_power_control_off_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, journal, config = board(tmp_path)
    lock, target = dangling(journal, tmp_path)
    before = tree_snapshot(root)
    message = start_refused(root, config, caplog)
    assert message == (f"power.journal_dir {journal} unusable ({dangling_message(lock, target)})"
                       ": power settings will not be written"), message
    assert "Errno" not in message

    # The board lock went with it: once the partition is back, a start writes again.
    target.parent.mkdir(parents=True)
    again = PowerController(load_config(config))
    again.start(0.0)
    try:
        assert again.writes and again.journal is not None
        assert target.is_file() and lock.is_symlink()
    finally:
        again.stop()
    assert tree_snapshot(root) == before


def test_a_crashed_runs_journal_is_left_whole_behind_a_dangling_lock(tmp_path: Path) -> None:
    """The lock comes before the read: without it the journal is neither restored, nor set
    aside, nor written; the next start that can lock gives the originals back."""
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    left = crashed(root, journal)
    _, target = dangling(journal, tmp_path)
    controller = PowerController(load_config(config))
    controller.start(0.0)
    controller.on_gate(MOTION, 1.0)
    controller.stop()
    assert controller.journal is None
    assert (journal / JOURNAL_NAME).read_text() == left["journal"]
    assert (root / NPU_GOVERNOR).read_text() == left["governor"]
    assert sorted(p.name for p in journal.iterdir()) == sorted([JOURNAL_NAME, LOCK_NAME])

    target.parent.mkdir(parents=True)
    again = PowerController(load_config(config))
    again.start(0.0)
    again.stop()
    assert tree_snapshot(root) == before


def test_the_daemon_runs_without_power_control_and_logs_the_link(
    start_daemon: StartDaemon, tmp_path: Path, face_video: FaceVideo
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    lock, target = dangling(tmp_path / "journal", tmp_path)
    daemon = start_daemon(
        camera={"source": str(face_video.path), "realtime": False},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")})
    with daemon.connect() as client:
        assert client.request("status")["power"]["writes"] is False
    assert daemon.stop() == 0
    assert (f"power.journal_dir {tmp_path / 'journal'} unusable "
            f"({dangling_message(lock, target)}): power settings will not be written"
            ) in daemon.log(), daemon.log()
    assert "Traceback" not in daemon.log()
    assert tree_snapshot(root) == before


# -- 4. `wattgate restore` -------------------------------------------------------------------


def restore(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", "restore", "--config",
                           str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_restore_names_a_dangling_lock_and_touches_nothing(tmp_path: Path) -> None:
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    left = crashed(root, journal)
    lock, target = dangling(journal, tmp_path)
    out = restore(config)
    assert (out.returncode, out.stdout, out.stderr) == (
        1, "", f"wattgate restore: {dangling_message(lock, target)}; nothing restored\n")
    assert (journal / JOURNAL_NAME).read_text() == left["journal"]
    assert (root / NPU_GOVERNOR).read_text() == left["governor"]

    target.parent.mkdir(parents=True)  # the partition is back
    out = restore(config)
    assert out.returncode == 0, out.stderr
    assert f"restored {NPU_GOVERNOR}" in out.stdout
    assert tree_snapshot(root) == before
    assert lock.is_symlink() and target.is_file()


def test_restore_names_a_dangling_lock_with_no_journal(tmp_path: Path) -> None:
    """"nothing to restore" and 0 said the journal_dir was fine, while the daemon could not
    lock it and ran without power control."""
    _, journal, config = board(tmp_path)
    lock, target = dangling(journal, tmp_path)
    out = restore(config)
    assert (out.returncode, out.stdout, out.stderr) == (
        1, "", f"wattgate restore: {dangling_message(lock, target)}; nothing restored\n")
    assert sorted(p.name for p in journal.iterdir()) == [LOCK_NAME]


def test_restore_with_a_lock_linked_to_a_file_not_made_yet_has_nothing_to_restore(
    tmp_path: Path,
) -> None:
    """Nothing wrong with that link: no daemon made the lock, and restore makes none."""
    _, journal, config = board(tmp_path)
    journal.mkdir()
    (tmp_path / "data").mkdir()
    (journal / LOCK_NAME).symlink_to(tmp_path / "data" / LOCK_NAME)
    out = restore(config)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "nothing to restore", "")
    assert not (tmp_path / "data" / LOCK_NAME).exists()
    assert sorted(p.name for p in journal.iterdir()) == [LOCK_NAME]


def test_a_journal_dir_that_is_a_file_is_named_not_a_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal_dir that is a file: the start said "unusable ([Errno 17] File exists: ...)",
    and `wattgate restore` said "nothing to restore" with exit 0, as if all were well."""
    root, journal, config = board(tmp_path)
    journal.write_text("not a directory\n")
    before = tree_snapshot(root)
    assert start_refused(root, config, caplog) == (
        f"power.journal_dir {journal} unusable (not a directory): power settings will not be "
        "written")
    out = restore(config)
    assert out.returncode == EXIT_CONFIG and out.stdout == "", out
    assert f"power.journal_dir {journal} is not a directory" in out.stderr
    assert journal.read_text() == "not a directory\n"
    assert tree_snapshot(root) == before
