"""The event log's place in daemon.state_dir: what is wrong with it is said, naming the path.

A state_dir that is a regular file, a directory the daemon may not write, a -wal that is a
directory: makedirs and SQLite said "File exists", "unable to open database file" or "disk
I/O error", naming neither the path nor what was wrong with it. And a copy of the seq
reservation (events.db.seq) the daemon may not write failed every flush that reserved
numbers. Real files throughout; another user through conftest's run_as (a fork that drops
to nobody), since root may write anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, run_as
from tests.test_eventlog import _tmpfs
from wattgate.daemon.eventlog import FLOOR_SUFFIX, EventLog

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian
StartDaemon = Callable[..., DaemonProcess]


def _open_error(path: Path, uid: int = 0) -> str:
    """What opening the log at path raised (its text), as `uid` (run_as), or "opened"."""

    def task() -> str:
        try:
            EventLog(str(path)).close(0.0)
        except OSError as exc:
            return str(exc)
        return "opened"

    return run_as(uid, uid, task)


def test_a_state_dir_that_is_a_regular_file_is_named_and_said_to_be_one(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Exit 69 with the key already (tests/test_daemon.py); the reason was "[Errno 17] File
    exists", which reads as if all were well."""
    state = tmp_path / "state-is-a-file"
    state.write_text("")
    daemon = start_daemon(daemon={"state_dir": str(state)})
    assert daemon.wait() == 69
    assert (f"wattgate: daemon.state_dir {state}: cannot open the event log: {state}: is a "
            "regular file, not a directory") in daemon.log(), daemon.log()


def test_a_file_among_the_state_dirs_parents_is_named(tmp_path: Path) -> None:
    """makedirs said "[Errno 20] Not a directory" naming the state_dir, not the file."""
    (tmp_path / "var").write_text("")
    with pytest.raises(OSError) as info:
        EventLog(str(tmp_path / "var/lib/wattgate/events.db"))
    assert str(info.value) == f"{tmp_path / 'var'}: is a regular file, not a directory"


def test_a_state_dir_that_is_a_link_to_nothing_is_named(tmp_path: Path) -> None:
    """An unmounted data partition: the link is there, its target is not."""
    (tmp_path / "state").symlink_to(tmp_path / "data/wattgate")
    with pytest.raises(OSError) as info:
        EventLog(str(tmp_path / "state/events.db"))
    assert str(info.value) == (f"{tmp_path / 'state'}: is a symbolic link to "
                               f"{tmp_path / 'data/wattgate'}, which does not exist")


@pytest.mark.parametrize("made", [False, True])
def test_a_state_dir_the_daemon_may_not_write_is_named_with_its_owner_and_mode(
    reachable_tmp: Path, made: bool
) -> None:
    """Refused either way, but as "unable to open database file" (no log yet) or a
    permission error on events.db.lock (a log root made there)."""
    state = reachable_tmp / "state"
    state.mkdir(mode=0o755)
    if made:
        EventLog(str(state / "events.db")).close(0.0)
    report = _open_error(state / "events.db", NOBODY)
    assert report == (
        f"{state}: is not writable by uid {NOBODY} (owner uid 0, gid 0, mode 0755); the "
        "event log's files are made in it"), report


def test_a_state_dir_the_daemon_may_not_make_is_named(reachable_tmp: Path) -> None:
    report = _open_error(reachable_tmp / "state/events.db", NOBODY)
    assert report == (
        f"{reachable_tmp}: is not writable by uid {NOBODY} (owner uid 0, gid 0, mode 0755); "
        "the state directory is made in it"), report


def test_a_state_dir_on_a_read_only_file_system_says_so(tmp_path: Path) -> None:
    """A state partition mounted read-only (or a unit without ReadWritePaths=)."""
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        EventLog(str(disk / "events.db")).close(0.0)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(OSError) as info:
            EventLog(str(disk / "events.db"))
    assert str(info.value) == (f"{disk}: is on a read-only file system; the event log's "
                               "files are made in it")


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal", ".lock", FLOOR_SUFFIX])
@pytest.mark.parametrize("made", [False, True])
def test_a_directory_where_a_file_of_the_log_goes_is_named(
    tmp_path: Path, suffix: str, made: bool
) -> None:
    """SQLite said "disk I/O error" or "unable to open database file"; a -shm or .seq
    that is a directory let the log open and fail every flush."""
    path = tmp_path / "events.db"
    if made:
        EventLog(str(path)).close(0.0)
    (tmp_path / f"events.db{suffix}").unlink(missing_ok=True)
    (tmp_path / f"events.db{suffix}").mkdir()
    with pytest.raises(OSError) as info:
        EventLog(str(path))
    assert str(info.value) == f"{path}{suffix}: is a directory, not a file"


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_database_file_the_daemon_may_not_write_is_named(
    reachable_tmp: Path, suffix: str
) -> None:
    """Left by `sqlite3 events.db` or `wattgate run` as root: a -shm it could not write
    let the log open and fail every flush with "attempt to write a readonly database"."""
    state = reachable_tmp / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    path = state / "events.db"
    assert _open_error(path, NOBODY) == "opened"
    (state / f"events.db{suffix}").touch()
    os.chown(state / f"events.db{suffix}", 0, 0)
    os.chmod(state / f"events.db{suffix}", 0o644)
    report = _open_error(path, NOBODY)
    assert report == (f"{path}{suffix}: is not writable by uid {NOBODY} (owner uid 0, "
                           "gid 0, mode 0644)"), report


@pytest.mark.parametrize("how", ["mode 0444", "owned by root"])
def test_a_seq_copy_the_daemon_may_not_write_is_replaced_and_numbering_goes_on(
    reachable_tmp: Path, how: str
) -> None:
    """Every flush that reserved numbers failed for good; the copy is now replaced by a
    file of the daemon's own (the directory is writable, as the database needs it)."""
    state = reachable_tmp / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    path, floor = state / "events.db", state / f"events.db{FLOOR_SUFFIX}"

    def log_some(count: int) -> str:
        log = EventLog(str(path), seq_block=10)
        seqs = [log.append("motion_start", 1.0)["seq"] for _ in range(count)]
        flushed = log.flush(2.0)
        log.close(3.0)
        return json.dumps({"seqs": seqs, "flushed": flushed})

    assert json.loads(run_as(NOBODY, NOBODY, lambda: log_some(3)))["seqs"] == [1, 2, 3]
    if how == "mode 0444":
        os.chmod(floor, 0o444)
    else:
        os.chown(floor, 0, 0)
    report = run_as(NOBODY, NOBODY, lambda: log_some(25))  # past two blocks of 10
    assert json.loads(report) == {"seqs": list(range(4, 29)), "flushed": True}, report
    assert int(floor.read_text()) == 28 and os.stat(floor).st_uid == NOBODY
    assert sorted(p.name for p in state.iterdir() if p.name.endswith(".tmp")) == []
    # and a copy it may write is written in place: a rename needs a new block (a full disk)
    inode = os.stat(floor).st_ino
    assert json.loads(run_as(NOBODY, NOBODY, lambda: log_some(25)))["flushed"] is True
    assert os.stat(floor).st_ino == inode and int(floor.read_text()) == 53


def test_a_database_linked_into_a_directory_that_does_not_exist_stops_the_start(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """events.db linked to a data partition that is not mounted: SQLite said "unable to
    open database file", naming neither the link nor its target."""
    state, target = tmp_path / "state", tmp_path / "data/wattgate/events.db"
    state.mkdir()
    (state / "events.db").symlink_to(target)
    daemon = start_daemon(daemon={"state_dir": str(state)})
    assert daemon.wait() == 69
    assert (f"cannot open the event log: {state / 'events.db'}: is a symbolic link to "
            f"{target}, whose directory {target.parent} does not exist") in daemon.log(), \
        daemon.log()


@pytest.mark.parametrize("database", ["none yet", "the daemon's"])
def test_a_database_linked_into_a_directory_the_daemon_may_not_write_is_named(
    reachable_tmp: Path, database: str
) -> None:
    """SQLite makes -wal and -shm beside the file a link resolves to, not beside the link:
    it said "unable to open database file", or "attempt to write a readonly database"."""
    state, data = reachable_tmp / "state", reachable_tmp / "data"
    state.mkdir()
    data.mkdir(mode=0o755)
    os.chown(state, NOBODY, NOBODY)
    (state / "events.db").symlink_to(data / "events.db")
    if database == "the daemon's":
        (data / "events.db").touch()
        os.chown(data / "events.db", NOBODY, NOBODY)
    report = _open_error(state / "events.db", NOBODY)
    assert report == (
        f"{data}: is not writable by uid {NOBODY} (owner uid 0, gid 0, mode 0755); SQLite "
        f"makes the -wal and -shm of {state / 'events.db'} (a symbolic link) in it"), report


def test_the_files_beside_a_linked_database_are_checked(tmp_path: Path) -> None:
    """SQLite's -wal of a linked database is the one beside its target."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/events.db-wal").mkdir()
    (tmp_path / "events.db").symlink_to(tmp_path / "data/events.db")
    with pytest.raises(OSError) as info:
        EventLog(str(tmp_path / "events.db"))
    assert str(info.value) == f"{tmp_path / 'data/events.db-wal'}: is a directory, not a file"


def _hold_lock_without_a_pid(lock: Path) -> subprocess.Popen[str]:
    """Another process holding the log's lock through a read-only fd, as a daemon does in a
    state_dir it may not write: it writes no pid in the file."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         f"fd = os.open({str(lock)!r}, os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.mark.parametrize("held", [False, True])
def test_a_lock_file_the_daemon_may_not_read_is_named_and_its_holder_too(
    reachable_tmp: Path, held: bool
) -> None:
    """events.db.lock left mode 0000 by root (held by a daemon running as root, or not):
    the start said only "[Errno 13] Permission denied", though /proc/locks names the
    holder."""
    state = reachable_tmp / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    path, lock = state / "events.db", state / "events.db.lock"
    assert _open_error(path, NOBODY) == "opened"
    os.chown(lock, 0, 0)
    os.chmod(lock, 0o000)
    holder = _hold_lock_without_a_pid(lock) if held else None
    try:
        report = _open_error(path, NOBODY)
    finally:
        if holder is not None:
            holder.communicate("")
    if holder is not None:
        assert report == (f"[Errno 16] {lock} is held by another wattgate process (pid "
                          f"{holder.pid}): one daemon per daemon.state_dir; stop the other one "
                          "or give each its own state_dir"), report
    else:
        assert report == (f"{lock}: is not readable by uid {NOBODY} (owner uid 0, gid 0, mode "
                          "0000); one daemon per daemon.state_dir is kept by locking it"), report


def test_a_lock_held_by_a_process_that_wrote_no_pid_names_the_holder(tmp_path: Path) -> None:
    """The pid comes from /proc/locks when the file has none: the message said only "held by
    another wattgate process", with no way to tell which."""
    path, lock = tmp_path / "events.db", tmp_path / "events.db.lock"
    lock.touch()
    holder = _hold_lock_without_a_pid(lock)
    try:
        with pytest.raises(OSError) as info:
            EventLog(str(path))
    finally:
        holder.communicate("")
    assert f"{lock} is held by another wattgate process (pid {holder.pid})" in str(info.value)
