"""The event log's side files and its set-aside, on real files and real processes.

A lock file that is a symbolic link gone wrong (to a directory that is not there, to a
directory, to itself) stopped the start with a bare OSError that named no target; the
holder of a lock was named by a stale pid left in the file rather than by the kernel; and
a damaged database set aside must take its WAL with it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, run_as
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.pidlock import LockHeld, lock_file

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian
StartDaemon = Callable[..., DaemonProcess]


# -- 1. events.db.lock as a symbolic link ---------------------------------------------------


def test_a_lock_linked_into_a_directory_that_does_not_exist_stops_the_start(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """events.db.lock left linked to a data partition that moved: the start said
    "[Errno 2] No such file or directory" naming the link only, not where it points."""
    state, target = tmp_path / "state", tmp_path / "data/wattgate/events.db.lock"
    state.mkdir()
    (state / "events.db.lock").symlink_to(target)
    daemon = start_daemon(daemon={"state_dir": str(state)})
    assert daemon.wait() == 69
    assert (f"cannot open the event log: {state / 'events.db.lock'}: is a symbolic link to "
            f"{target}, whose directory {target.parent} does not exist") in daemon.log(), \
        daemon.log()
    assert "Traceback" not in daemon.log()
    assert not (state / "events.db").exists()  # refused before SQLite made anything


def test_a_lock_linked_into_a_directory_that_does_not_exist_is_named_by_the_log(
    tmp_path: Path,
) -> None:
    """EventLog itself raised FileNotFoundError from pidlock's os.open; a relative link is
    named as it reads, its directory as resolved."""
    (tmp_path / "events.db.lock").symlink_to("gone/events.db.lock")
    with pytest.raises(OSError) as info:
        EventLog(str(tmp_path / "events.db"))
    assert str(info.value) == (
        f"{tmp_path / 'events.db.lock'}: is a symbolic link to gone/events.db.lock, whose "
        f"directory {tmp_path.resolve() / 'gone'} does not exist")


def test_a_lock_linked_to_a_directory_is_named_with_its_target(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Said "is a directory, not a file" of a path `ls` shows as a link."""
    state, target = tmp_path / "state", tmp_path / "data"
    state.mkdir()
    target.mkdir()
    (state / "events.db.lock").symlink_to(target)
    daemon = start_daemon(daemon={"state_dir": str(state)})
    assert daemon.wait() == 69
    assert (f"cannot open the event log: {state / 'events.db.lock'}: is a symbolic link to "
            f"{target}, which is a directory, not a file") in daemon.log(), daemon.log()


def test_a_lock_link_that_loops_is_named(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """The start said "[Errno 40] Too many levels of symbolic links" and EventLog raised
    it from os.stat, uncaught."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "events.db.lock").symlink_to(state / "loop")
    (state / "loop").symlink_to(state / "events.db.lock")
    daemon = start_daemon(daemon={"state_dir": str(state)})
    assert daemon.wait() == 69
    assert (f"cannot open the event log: {state / 'events.db.lock'}: is a symbolic link to "
            f"{state / 'loop'}, which never resolves: a loop of symbolic links") \
        in daemon.log(), daemon.log()


def test_a_lock_linked_to_a_file_yet_to_be_made_is_made_there(tmp_path: Path) -> None:
    """A link into a directory that is there is a lock like any other: the file is made
    where it points, and the link stays."""
    (tmp_path / "data").mkdir()
    lock = tmp_path / "events.db.lock"
    lock.symlink_to(tmp_path / "data/events.db.lock")
    log = EventLog(str(tmp_path / "events.db"))
    try:
        assert lock.is_symlink() and (tmp_path / "data/events.db.lock").is_file()
        with pytest.raises(OSError, match="is held by another wattgate process"):
            EventLog(str(tmp_path / "events.db"))
    finally:
        log.close(0.0)


def test_a_lock_linked_into_a_directory_the_daemon_may_not_write_is_named(
    reachable_tmp: Path,
) -> None:
    """The lock file could not be made where the link points, so it was "locked" read-only,
    found missing, and the log opened with no lock at all: a second daemon opened it too
    and gave the same numbers."""
    state, data = reachable_tmp / "state", reachable_tmp / "data"
    state.mkdir()
    data.mkdir(mode=0o755)
    os.chown(state, NOBODY, NOBODY)
    lock = state / "events.db.lock"
    lock.symlink_to(data / "events.db.lock")

    def open_twice() -> str:
        try:
            first = EventLog(str(state / "events.db"))
        except OSError as exc:
            return str(exc)
        try:
            EventLog(str(state / "events.db")).close(0.0)
            return "opened twice"
        except OSError as exc:
            return f"second: {exc}"
        finally:
            first.close(0.0)

    report = run_as(NOBODY, NOBODY, open_twice)
    assert report == (
        f"{data}: is not writable by uid {NOBODY} (owner uid 0, gid 0, mode 0755); {lock} "
        f"(a symbolic link to {data / 'events.db.lock'}, not there yet) is made in it"), report


# -- 2. the holder's pid: the kernel's word over the file's ---------------------------------


def _hold_lock(lock: Path, write_pid: bool) -> subprocess.Popen[str]:
    """Another process holding an flock on lock (as pidlock takes it) until its stdin
    closes: through a read-only fd that writes nothing in the file, or as a daemon does,
    writing its pid there."""
    return _holder(f"fd = os.open({str(lock)!r}, os.O_RDWR if {write_pid} else os.O_RDONLY)\n"
                   "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                   f"if {write_pid}:\n"
                   "    os.ftruncate(fd, 0)\n"
                   "    os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n")


def _holder(lock_code: str) -> subprocess.Popen[str]:
    """A Python process that runs lock_code (fcntl and os imported) and then keeps what it
    took until its stdin closes; returned once it has taken it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n" + lock_code
         + "print('held', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _gone_pid() -> int:
    """The pid of a process that has exited: what a previous holder leaves in the file."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_lock_whose_file_holds_a_stale_pid_names_the_process_that_holds_it(
    tmp_path: Path,
) -> None:
    """The file holds a previous holder's pid when the one holding it now could not write
    its own (a read-only fd): the message named the stale pid, a process long gone or,
    worse, an unrelated one, and an admin killed the wrong process. /proc/locks says who
    holds it."""
    path, lock = tmp_path / "events.db", tmp_path / "events.db.lock"
    stale = _gone_pid()
    lock.write_text(f"{stale}\n")
    holder = _hold_lock(lock, write_pid=False)
    try:
        assert holder.pid != stale
        with pytest.raises(OSError) as info:
            EventLog(str(path))
        with pytest.raises(LockHeld) as held:
            lock_file(str(lock))
    finally:
        holder.communicate("")
    assert f"{lock} is held by another wattgate process (pid {holder.pid})" in str(info.value)
    assert info.value.errno == errno.EBUSY
    assert held.value.pid == str(holder.pid)
    assert lock.read_text() == f"{stale}\n"  # the refused one wrote nothing


def test_a_holder_the_kernel_does_not_name_here_is_named_by_the_file(tmp_path: Path) -> None:
    """In a pid namespace of its own (a container) /proc/locks leaves out a holder outside
    it: the pid the holder wrote in the file is then the one named, as before."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    lock = tmp_path / "events.db.lock"
    lock.touch()
    holder = _hold_lock(lock, write_pid=True)
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
             "import os, sys\nfrom wattgate.daemon.pidlock import LockHeld, _flock_holder, "
             "lock_file\n"
             f"print(repr(_flock_holder(os.stat({str(lock)!r}))))\n"
             f"try:\n    lock_file({str(lock)!r})\n"
             "except LockHeld as held:\n    print(held.pid)\n"],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    finally:
        holder.communicate("")
    if probe.returncode != 0 and "unshare" in probe.stderr:
        pytest.skip(f"no pid namespace here: {probe.stderr.strip()}")
    assert probe.stdout.splitlines() == ["''", str(holder.pid)], probe.stderr


# -- 3. a damaged database is set aside with its WAL ----------------------------------------


def _damaged_with_a_wal(scratch: Path, path: Path) -> tuple[int, int]:
    """A log at path whose events.db header is damaged and whose -wal (and -shm) hold
    events the database file does not: the files of a log open in another process, copied
    while it still held them (its close would have checkpointed the WAL and deleted it),
    as a power cut leaves them. Returns the last seq written to the file and to the WAL."""
    scratch.mkdir()
    origin = scratch / "events.db"
    log = EventLog(str(origin))
    for i in range(20):
        log.append("detection", float(i), note="in the file")
    log.close(20.0)  # checkpointed: these are in events.db itself
    in_file = log.last_seq
    log = EventLog(str(origin))
    for i in range(20):
        log.append("detection", 100.0 + i, note="in the wal")
    assert log.flush(120.0) is True
    try:
        for suffix in ("", "-wal", "-shm", ".seq"):
            (path.parent / f"{path.name}{suffix}").write_bytes(
                (scratch / f"events.db{suffix}").read_bytes())
        in_wal = log.last_seq
    finally:
        log.close(121.0)
    with contextlib.closing(sqlite3.connect(f"file:{origin}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (40,)
    with path.open("r+b") as f:  # "SQLite format 3\0" no more: SQLITE_NOTADB
        f.write(b"\xff" * 16)
    return in_file, in_wal


def _hold_read_lock(path: Path) -> subprocess.Popen[str]:
    """Another process with a read lock on SQLite's SHARED bytes of the database at path
    (os_unix.c: SHARED_FIRST, PENDING_BYTE + 2), as any reader of it holds one, until its
    stdin closes: while it does, no connection gets the EXCLUSIVE lock that its close needs
    to checkpoint the WAL and delete it."""
    return _holder(f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
                   "fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0x40000000 + 2)\n")


@pytest.mark.parametrize("reader", [False, True])
def test_a_damaged_database_is_set_aside_with_its_wal_and_the_new_log_is_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reader: bool
) -> None:
    """The -wal holds committed pages of the old database: left beside the new one, it is
    SQLite's to apply to a database it does not belong to, and the copy set aside lacks the
    events in it. Its pages go with the copy, so the new log starts empty and sound and the
    copy reads whole once its header is mended.

    With nobody else on the file, SQLite itself checkpoints the WAL into the damaged file
    when the connection that found it damaged is closed, and deletes it. With a reader on
    it (`reader`), that close cannot, and leaves the -wal and -shm: the set-aside moves the
    -wal with the copy, byte for byte, and deletes the -shm, an index of it."""
    state = tmp_path / "state"
    state.mkdir()
    path = state / "events.db"
    in_file, in_wal = _damaged_with_a_wal(tmp_path / "scratch", path)
    wal = (state / "events.db-wal").read_bytes()
    assert len(wal) > 32 + 24  # a WAL header and at least one frame
    caplog.set_level(logging.ERROR, logger="wattgate.eventlog")

    holder = _hold_read_lock(path) if reader else None
    try:
        log = EventLog(str(path))
    finally:
        if holder is not None:
            holder.communicate("")
    try:
        errors = [r.getMessage() for r in caplog.records]
        assert len(errors) == 1 and f"moved to {path}.damaged " in errors[0], errors
        assert log.since(0, 100) == []
        assert log.oldest_seq() == log.last_seq + 1 and log.last_seq >= in_wal
        new = log.append("motion_start", 200.0)["seq"]
        assert new > in_wal
        assert log.flush(201.0) is True
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("SELECT seq FROM events").fetchall() == [(new,)]
    finally:
        log.close(202.0)
    if reader:
        assert (state / "events.db.damaged-wal").read_bytes() == wal
    assert sorted(p.name for p in state.iterdir()) == [
        "events.db", "events.db.damaged", *(["events.db.damaged-wal"] if reader else []),
        "events.db.lock", "events.db.seq"]
    reopened = EventLog(str(path))
    try:
        assert [e["seq"] for e in reopened.since(0, 100)] == [new]
    finally:
        reopened.close(203.0)
    # the copy is the whole old log: mend its header and SQLite reads the WAL's events too
    with (state / "events.db.damaged").open("r+b") as f:
        f.write(b"SQLite format 3\0")
    with contextlib.closing(sqlite3.connect(state / "events.db.damaged")) as db:
        notes = db.execute("SELECT seq, json_extract(body, '$.note') FROM events").fetchall()
    assert notes == [(seq, "in the file") for seq in range(1, in_file + 1)] + [
        (seq, "in the wal") for seq in range(in_file + 1, in_wal + 1)]
