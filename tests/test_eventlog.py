"""The event log keeps every event, in seq order, across reopen, and stays bounded.

A number is never given twice, not even after an unclean exit; a write that fails
keeps the events for the next flush.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from wattgate.daemon.eventlog import BUSY_TIMEOUT_MS, PRUNE_EVERY_S, WAL_MAX_BYTES, EventLog
from wattgate.daemon.hub import encode


class BootClock:
    """Seconds since boot, as the test sets them: the real clock cannot be made to pass the
    days that aging out takes."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _die(log: EventLog) -> None:
    """What an unclean exit leaves: nothing held is written, nothing is given back; only
    the lock on the log goes, as the kernel drops it when the process dies."""
    log._release_lock()


def test_seq_survives_reopen_and_held_events_are_readable(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    first = log.append("motion_start", 100.0, score=0.2)
    second = log.append("motion_end", 101.0)
    assert (first["seq"], second["seq"]) == (1, 2)
    # Held, not yet flushed: still visible to readers.
    assert [e["seq"] for e in log.since(0, 10)] == [1, 2]
    log.flush(102.0)
    log.append("detection", 103.0, label="face")  # held at close: close flushes it
    log.close(104.0)

    reopened = EventLog(path)
    events = reopened.since(0, 10)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0] == {"class": "event", "seq": 1, "ts": 100.0, "kind": "motion_start",
                         "score": 0.2}
    assert reopened.append("profile_change", 105.0)["seq"] == 4
    assert [e["seq"] for e in reopened.since(2, 10)] == [3, 4]
    assert [e["seq"] for e in reopened.since(0, 2)] == [1, 2]


def test_a_number_that_is_not_finite_is_logged_as_null(tmp_path: Path) -> None:
    """Stored as it went out live (null), not as a bare Infinity that an `events` answer
    would have to repeat."""
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    log.append("lighting", 100.0, lux=math.inf, before=10.0)
    log.close(101.0)
    (body,) = sqlite3.connect(path).execute("SELECT body FROM events").fetchone()
    assert json.loads(body, parse_constant=pytest.fail) == {"lux": None, "before": 10.0}
    assert EventLog(path).since(0, 10)[0]["lux"] is None


def test_pruning_by_count_and_age_never_reuses_seq(tmp_path: Path) -> None:
    clock = BootClock()
    log = EventLog(str(tmp_path / "events.db"), max_events=5, max_age_s=100.0, clock=clock)
    for i in range(12):
        clock.now = float(i)
        log.append("motion_start", float(i))
    log.flush(20.0)
    assert [e["seq"] for e in log.since(0, 100)] == [8, 9, 10, 11, 12]
    log.flush(20.0 + PRUNE_EVERY_S / 2)  # nothing to write: not looked at again so soon
    assert [e["seq"] for e in log.since(0, 100)] == [8, 9, 10, 11, 12]
    clock.now = 110.0
    log.flush(110.0)  # everything older than ts 10 goes
    assert [e["seq"] for e in log.since(0, 100)] == [11, 12]
    log.close(110.0)
    reopened = EventLog(str(tmp_path / "events.db"))
    assert reopened.append("x", 61.0)["seq"] == 13
    assert reopened.oldest_seq() == 11


def test_numbers_are_never_reused_after_an_unclean_exit(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    log.append("motion_start", 100.0)
    log.flush(100.5)
    # Sent live, not yet written when the process dies: no flush, no close.
    lost = [log.append("motion_end", 101.0)["seq"], log.append("detection", 101.2)["seq"]]
    _die(log)

    reopened = EventLog(path)
    assert [e["seq"] for e in reopened.since(0, 10)] == [1]
    assert reopened.last_seq == 1  # the newest event that was written
    new = reopened.append("motion_start", 110.0)["seq"]
    assert new > max(lost)  # a gap, never a reused number
    # A client that saw the lost events live resumes after the last one and gets the new one.
    assert [e["seq"] for e in reopened.since(max(lost), 10)] == [new]
    assert reopened.last_seq == new
    reopened.close(111.0)
    del log


def test_numbers_past_a_block_are_reserved_before_use(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path, seq_block=10)
    given = [log.append("motion_start", float(i))["seq"] for i in range(25)]  # no flush
    assert given == list(range(1, 26))
    _die(log)
    reopened = EventLog(path, seq_block=10)
    assert reopened.append("x", 30.0)["seq"] > 25
    reopened.close(31.0)


def test_a_killed_process_does_not_get_its_numbers_reused(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    script = (
        "import os, signal, sys\n"
        "from wattgate.daemon.eventlog import PRUNE_EVERY_S, EventLog\n"
        "log = EventLog(sys.argv[1])\n"
        "for i in range(3):\n"
        "    log.append('motion_start', float(i))\n"
        "log.flush(3.0)\n"
        "print(log.append('motion_end', 4.0)['seq'], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, path], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == -signal.SIGKILL, done.stderr
    sent_live = int(done.stdout)
    assert sent_live == 4
    log = EventLog(path)
    assert [e["seq"] for e in log.since(0, 10)] == [1, 2, 3]
    assert log.append("motion_start", 5.0)["seq"] > sent_live
    log.close(6.0)


def test_a_clean_close_leaves_no_gap(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    for expected in (1, 2, 3):
        log = EventLog(path)
        assert log.append("x", float(expected))["seq"] == expected
        log.close(float(expected))
    log = EventLog(path)
    assert log.oldest_seq() == 1 and log.last_seq == 3
    log.close(4.0)


def test_a_database_from_before_reservations_opens_and_continues(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
                " kind TEXT NOT NULL, body TEXT NOT NULL)")
    old.executemany("INSERT INTO events (ts, kind, body) VALUES (?, ?, ?)",
                    [(float(i), "motion_start", "{}") for i in range(7)])
    old.execute("DELETE FROM events WHERE seq <= 2")
    old.commit()
    old.close()
    log = EventLog(path)
    assert (log.oldest_seq(), log.last_seq) == (3, 7)
    assert log.append("motion_end", 8.0)["seq"] == 8
    log.close(9.0)
    assert EventLog(path).append("x", 10.0)["seq"] == 9


def test_age_pruning_removes_only_the_oldest_events_whatever_their_stamps(
    tmp_path: Path,
) -> None:
    """A board without a real-time clock boots at 1970, then NTP sets the clock: the events
    stamped 1970 sit between newer ones. Age pruning stops at the first recent event, so a
    client that read up to some seq finds every later one (a hole inside the log would
    look like events that never were)."""
    path = str(tmp_path / "events.db")
    now = 1.8e9
    clock = BootClock()
    log = EventLog(path, max_age_s=30 * 86400.0, clock=clock)
    for i in range(3):
        log.append("motion_start", now - 60 + i)
    log.close(now - 50)
    clock.now = 100.0
    log = EventLog(path, max_age_s=30 * 86400.0, clock=clock)
    for i in range(3):
        log.append("motion_start", 10.0 + i)  # the clock at boot
    log.flush(12.0)
    clock.now = 200.0
    for i in range(2):
        log.append("motion_end", now + i)  # NTP has set it
    log.flush(now + 1)
    assert [e["seq"] for e in log.since(3, 100)] == [4, 5, 6, 7, 8]
    later = now + 30 * 86400.0 - 10.0
    clock.now = 30 * 86400.0 + 150.0  # 30 days after the 1970 events, not after the others
    log.flush(later)  # the first three are too old now: they go, and the 1970 ones with them
    assert [e["seq"] for e in log.since(0, 100)] == [7, 8]
    assert log.oldest_seq() == 7
    log.close(later)


def test_pruning_by_count_keeps_max_events_across_a_gap(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path, max_events=5, seq_block=10)
    for i in range(3):
        log.append("x", float(i))
    log.flush(3.0)
    log.append("lost", 4.0)  # never written
    _die(log)
    reopened = EventLog(path, max_events=5, seq_block=10)
    for i in range(3):
        reopened.append("y", 5.0 + i)
    reopened.flush(9.0)
    seqs = [e["seq"] for e in reopened.since(0, 100)]
    assert len(seqs) == 5 and seqs[:2] == [2, 3] and seqs[2] > 4
    reopened.close(10.0)
    del log


def _locked(path: str) -> sqlite3.Connection:
    """Another process's write lock on the log (an admin's sqlite3 shell, a backup tool)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_flush_that_finds_the_database_locked_keeps_the_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    busy_ms = log._db.execute("PRAGMA busy_timeout").fetchone()[0]
    assert 0 < busy_ms <= BUSY_TIMEOUT_MS <= 100  # not SQLite's default 5 s on the event loop
    log.append("motion_start", 1.0)
    log.flush(1.5)
    other = _locked(path)
    caplog.set_level(logging.DEBUG, logger="wattgate.eventlog")
    log.append("motion_end", 2.0)
    log.append("detection", 2.5, labels=["face"])
    for second in range(3):
        assert log.flush(3.0 + second) is False
    # Held, so still readable; nothing written yet.
    assert [e["seq"] for e in log.since(0, 10)] == [1, 2, 3]
    assert other.execute("SELECT MAX(seq) FROM events").fetchone()[0] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and path in warnings[0].getMessage()
    assert "locked" in warnings[0].getMessage()

    other.execute("ROLLBACK")
    assert log.flush(6.0) is True
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and path in infos[0] and "writing again" in infos[0]
    assert [r[0] for r in other.execute("SELECT seq FROM events ORDER BY seq")] == [1, 2, 3]
    other.close()
    log.close(7.0)
    assert EventLog(path).since(2, 10)[0]["labels"] == ["face"]


def test_held_events_stay_bounded_while_writes_fail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path, max_events=5)
    other = _locked(path)
    caplog.set_level(logging.WARNING, logger="wattgate.eventlog")
    for i in range(8):
        log.append("motion_start", float(i))
        assert log.flush(float(i)) is False
    assert [e["seq"] for e in log.since(0, 100)] == [4, 5, 6, 7, 8]
    drops = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drops) == 1 and path in drops[0]
    other.execute("ROLLBACK")
    other.close()
    assert log.flush(9.0) is True
    log.close(9.0)
    assert [e["seq"] for e in EventLog(path).since(0, 100)] == [4, 5, 6, 7, 8]


def test_events_dropped_while_writes_fail_leave_no_hole_inside_the_log(
    tmp_path: Path,
) -> None:
    """The held events dropped while writes failed sat between the written events and
    the held ones after them: `events since` skipped them, and `oldest_seq` (the oldest
    written) did not say any were gone. The written events before them now count as
    pruned with them."""
    path = str(tmp_path / "events.db")
    log = EventLog(path, max_events=5)
    for i in range(3):
        log.append("motion_start", float(i))
    assert log.flush(3.0) is True
    other = _locked(path)
    for i in range(3, 10):
        log.append("motion_start", float(i))  # 4 and 5 are dropped
        assert log.flush(float(i)) is False
    assert [e["seq"] for e in log.since(0, 100)] == [6, 7, 8, 9, 10]
    assert [e["seq"] for e in log.since(2, 100)] == [6, 7, 8, 9, 10]
    assert log.oldest_seq() == 6
    other.execute("ROLLBACK")
    other.close()
    assert log.flush(10.0) is True
    assert (log.oldest_seq(), [e["seq"] for e in log.since(0, 100)]) == (6, [6, 7, 8, 9, 10])
    log.close(11.0)
    assert EventLog(path).oldest_seq() == 6


def test_a_full_disk_keeps_the_events_until_there_is_room(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    pages = log._db.execute("PRAGMA page_count").fetchone()[0]
    log._db.execute(f"PRAGMA max_page_count={pages}")  # the file cannot grow: SQLITE_FULL
    note = ["x" * 4000] * 5  # a list: a text this long would be cut (test_eventlog_bounds.py)
    log.append("detection", 1.0, note=note)
    assert log.flush(2.0) is False
    assert [e["seq"] for e in log.since(0, 10)] == [1]
    log._db.execute(f"PRAGMA max_page_count={pages * 100}")
    assert log.flush(3.0) is True
    log.close(4.0)
    assert EventLog(path).since(0, 10)[0]["note"] == note


def test_close_with_the_database_locked_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    log.append("motion_start", 1.0)
    log.flush(1.0)
    other = _locked(path)
    log.append("motion_end", 2.0)
    caplog.set_level(logging.WARNING, logger="wattgate.eventlog")
    log.close(3.0)
    assert any("lost" in r.getMessage() for r in caplog.records)
    other.execute("ROLLBACK")
    other.close()
    # The lost event's number is not given again: the reservation was not given back.
    assert EventLog(path).append("x", 4.0)["seq"] > 2


def test_an_event_json_cannot_hold_is_written_and_does_not_stop_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera's device path read with surrogateescape (a lone surrogate), a payload
    nested deeper than the encoder goes, a time that is not a number: such an event is
    logged as near to what happened as JSON and the table can hold, once, and every event
    after it is still written."""
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    caplog.set_level(logging.WARNING, logger="wattgate.eventlog")
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    odd = [
        log.append("camera_lost", 1.0, reason="/dev/video\udcff: gone"),
        log.append("camera_lost", 1.5, reason="/dev/video\udcfe: gone"),
        log.append("lighting", 2.0, lux=3.0, extra=deep),
        log.append("pir", math.nan),
        log.append("pir", math.inf),
        log.append("camera_back", 2.5, device=Path("/dev/video0")),  # not a JSON type
    ]
    log.append("motion_start", 3.0)
    for event in odd:
        encode(event)  # sent live as it is logged
    assert log.flush(4.0) is True
    log.close(5.0)
    events = EventLog(path).since(0, 10)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert events[:6] == odd
    assert "/dev/video" in events[0]["reason"] and events[2]["lux"] == 3.0
    assert events[5]["device"] == "/dev/video0"
    assert all(math.isfinite(e["ts"]) for e in events)
    warned = [r.getMessage() for r in caplog.records]
    assert len([m for m in warned if "camera_lost" in m]) == 1  # once, not per event


def test_a_second_log_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """Two daemons given one daemon.state_dir would both number events from the same
    reservation: the second must not start on it."""
    path = str(tmp_path / "events.db")
    first = EventLog(path)
    first.append("motion_start", 1.0)
    with pytest.raises(OSError, match="another"):
        EventLog(path)
    assert first.append("motion_end", 2.0)["seq"] == 2
    assert first.flush(3.0) is True
    first.close(4.0)
    second = EventLog(path)
    assert second.append("x", 5.0)["seq"] == 3
    second.close(6.0)


def _history(path: str) -> int:
    log = EventLog(path)
    for i in range(50):
        log.append("detection", float(i), note="x" * 500)
    log.close(60.0)
    return log.last_seq


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zero bytes"])
def test_a_damaged_database_at_start_is_set_aside_and_numbering_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """A power cut on flash can leave the file garbage, cut short, or empty. The daemon
    starts with a new log (the old file kept for a post-mortem) and never gives an old
    number again."""
    path = tmp_path / "events.db"
    last = _history(str(path))
    size = path.stat().st_size
    with path.open("r+b") as f:
        if damage == "garbage":
            f.write(bytes(range(256)) * (size // 256))
        else:
            f.truncate(size // 3 if damage == "truncated" else 0)
    caplog.set_level(logging.WARNING, logger="wattgate.eventlog")
    log = EventLog(str(path))
    new = log.append("motion_start", 100.0)["seq"]
    assert new > last
    assert log.flush(101.0) is True
    assert [e["seq"] for e in log.since(0, 100)] == [new]
    if damage != "zero bytes":  # an empty file is a valid, empty database
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and str(path) in errors[0]
        assert (tmp_path / "events.db.damaged").exists()
    log.close(102.0)
    assert EventLog(str(path)).append("x", 103.0)["seq"] == new + 1


def test_a_damaged_linked_database_is_set_aside_beside_its_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """events.db linked to a data partition: the set-aside renamed the link, and SQLite
    began the new log as a file in state_dir, so the log left the data partition for good,
    and the damaged file stayed where the link pointed. The target is set aside beside
    it, the link stays, the new log is begun at the target, and .seq and .lock stay
    beside the link."""
    state, data = tmp_path / "state", tmp_path / "data"
    state.mkdir()
    data.mkdir()
    path, target = state / "events.db", data / "events.db"
    path.symlink_to(target)
    last = _history(str(path))
    size = target.stat().st_size
    with target.open("r+b") as f:
        f.write(bytes(range(256)) * (size // 256))
    caplog.set_level(logging.WARNING, logger="wattgate.eventlog")
    log = EventLog(str(path))
    new = log.append("motion_start", 100.0)["seq"]
    assert new > last
    assert log.flush(101.0) is True
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"moved to {data.resolve() / 'events.db.damaged'} " in errors[0]
    log.close(102.0)
    assert path.is_symlink() and path.resolve() == target.resolve()
    assert (data / "events.db.damaged").is_file()
    assert not (state / "events.db.damaged").exists()
    assert sorted(p.name for p in state.iterdir()) == [
        "events.db", "events.db.lock", "events.db.seq"
    ]
    with contextlib.closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT seq FROM events").fetchall() == [(new,)]
    assert EventLog(str(path)).append("x", 103.0)["seq"] == new + 1


@contextlib.contextmanager
def _tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at mnt: a disk that can really be filled (ENOSPC); skipped where
    no tmpfs can be mounted (not root, no CAP_SYS_ADMIN)."""
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (`_tmpfs`)."""
    with _tmpfs(tmp_path / "disk", "1m") as mnt:
        yield mnt


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_with_room_left_in_the_wal_keeps_the_log_writing(small_disk: Path) -> None:
    """After a checkpoint SQLite writes the WAL from its start again: on a full disk it
    still commits. Reserving numbers must need no new block either, or every reservation
    on a full disk would fail the flush."""
    path = str(small_disk / "events.db")
    log = EventLog(path, seq_block=4)  # a reservation on every other flush
    for i in range(40):
        log.append("detection", float(i), note="x" * 200)
        assert log.flush(float(i)) is True
    log._db.execute("PRAGMA wal_checkpoint(RESTART)")
    _fill(small_disk)
    for i in range(40, 50):
        log.append("motion_start", float(i))
        assert log.flush(float(i)) is True
    log.close(51.0)
    os.unlink(small_disk / "filler")
    assert EventLog(path).last_seq == 50


def test_a_disk_that_fills_between_two_checkpoints_keeps_the_log_writing(
    tmp_path: Path,
) -> None:
    """The WAL, cut back to WAL_MAX_BYTES after each checkpoint, must grow a few KiB past
    that to reach the next one: on a disk full in between, every write failed from then
    on, until the daemon stopped. The pages are now copied into the database after the
    first write that finds no room, and the WAL starts again from its beginning."""
    with _tmpfs(tmp_path / "disk", "2m") as disk:  # room for the WAL at its full size
        path = str(disk / "events.db")
        log = EventLog(path, max_events=100)
        for i in range(1500):  # a few checkpoints: the database and the WAL have their size
            log.append("detection", float(i), note=["x" * 1000])
            if i % 10 == 9:
                assert log.flush(float(i)) is True
        _fill(disk)
        flushed = []
        for i in range(1500, 2500):
            log.append("detection", float(i), note=["x" * 1000])
            if i % 10 == 9:
                flushed.append(log.flush(float(i)))
        assert flushed == [True] * 100
        log.close(2500.0)
        assert EventLog(path).since(2499, 10)[0]["seq"] == 2500

def test_the_wal_file_stays_bounded_after_many_events(tmp_path: Path) -> None:
    """SQLite's defaults checkpoint at 1000 pages and never make the WAL smaller: a busy
    day left a 4 MB -wal file for good on a state partition of a few MB."""
    path = tmp_path / "events.db"
    wal = tmp_path / "events.db-wal"
    log = EventLog(str(path), max_events=2000)
    largest = 0
    for i in range(20_000):
        log.append("detection", float(i), note="x" * 1000)
        if i % 50 == 49:  # a busy second's worth of events per flush
            assert log.flush(float(i)) is True
            largest = max(largest, wal.stat().st_size)
    # what one flush adds past the checkpoint: its events' pages, the pages of the tree
    # above them and of the counters, each with its WAL frame header
    flush_bytes = 4 * 50 * 1000
    assert largest <= WAL_MAX_BYTES + flush_bytes, largest
    assert wal.stat().st_size <= WAL_MAX_BYTES + flush_bytes
    log.close(20_000.0)
    assert [e["seq"] for e in EventLog(str(path)).since(19_998, 10)] == [19_999, 20_000]


def test_a_clock_set_forward_by_years_does_not_age_out_the_events_of_this_boot(
    tmp_path: Path,
) -> None:
    """A board without a real-time clock boots at 1970 and NTP sets the clock later: the
    first prune after that took every event stamped 1970 for 55 years old and removed
    them, minutes after they happened, before a client had read them."""
    path = str(tmp_path / "events.db")
    log = EventLog(path, max_age_s=30 * 86400.0)
    booted = [log.append("motion_start", 10.0 + i)["seq"] for i in range(3)]  # 1970
    assert log.flush(12.0) is True
    now = 1.8e9  # NTP has set the clock
    assert log.flush(now) is True
    log.append("motion_end", now + 1)
    assert log.flush(now + PRUNE_EVERY_S + 1) is True
    assert [e["seq"] for e in log.since(0, 100)] == [*booted, 4]
    log.close(now + 2)
    reopened = EventLog(path, max_age_s=30 * 86400.0)  # a restart in the same boot
    assert reopened.flush(now + 3) is True
    assert [e["seq"] for e in reopened.since(0, 100)] == [*booted, 4]
    reopened.close(now + 4)


def test_events_of_an_earlier_boot_age_out_by_their_stamps(tmp_path: Path) -> None:
    """After a reboot the time since boot says nothing about an older event: its stamp is
    all there is, and a log left 30 days on a shelf is pruned at the next start."""
    path = str(tmp_path / "events.db")
    log = EventLog(path, max_age_s=30 * 86400.0)
    for i in range(3):
        log.append("motion_start", 1.8e9 + i)
    log.close(1.8e9 + 3)
    db = sqlite3.connect(path)  # what the same log looks like after a reboot
    with db:
        db.execute("UPDATE boot SET boot_id = 'another boot'")
    db.close()
    reopened = EventLog(path, max_age_s=30 * 86400.0)
    new = reopened.append("motion_end", 1.8e9 + 31 * 86400.0)["seq"]
    assert reopened.flush(1.8e9 + 31 * 86400.0) is True
    assert [e["seq"] for e in reopened.since(0, 100)] == [new]
    reopened.close(1.8e9 + 31 * 86400.0)


def test_a_log_on_a_full_disk_opens_and_writes_once_there_is_room(small_disk: Path) -> None:
    """A restart on a full state partition: SQLite could not size the -shm file it needs to
    read a WAL database (SQLITE_IOERR_SHMSIZE), the log did not open, and the daemon did
    not start at all, for want of room for its history."""
    path = str(small_disk / "events.db")
    log = EventLog(path)
    for i in range(20):
        log.append("detection", float(i), note="x" * 200)
    log.close(20.0)
    _fill(small_disk)
    log = EventLog(path)
    assert [e["seq"] for e in log.since(18, 10)] == [19, 20]
    new = log.append("motion_start", 21.0)["seq"]
    log.flush(21.0)  # may fail for want of room: the event is held meanwhile
    assert [e["seq"] for e in log.since(19, 10)] == [20, new]
    os.unlink(small_disk / "filler")
    assert log.flush(22.0) is True
    log.close(23.0)
    assert [e["seq"] for e in EventLog(path).since(19, 10)] == [20, new]


def test_a_daemon_whose_state_dir_is_full_starts_and_serves_its_events(
    start_daemon: Callable[..., DaemonProcess], small_disk: Path
) -> None:
    """It exited 69 (cannot open the event log): a full state partition took the camera
    down with it."""
    log = EventLog(str(small_disk / "events.db"))
    log.append("motion_start", 1.0)
    log.close(2.0)
    _fill(small_disk)
    daemon = start_daemon(daemon={"state_dir": str(small_disk)},
                          camera={"source": "synthetic:empty"})
    with daemon.connect() as client:
        answer = client.request("events", since=0)
        assert [e["seq"] for e in answer["events"]] == [1]
    assert daemon.stop() == 0
    assert "the disk is full" in daemon.log()


def test_a_seq_copy_with_a_number_too_big_is_taken_for_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One flipped bit in the first of the 20 digits of events.db.seq makes 1e19: SQLite
    cannot hold it, and the log did not open (OverflowError), so neither did the daemon."""
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    log.append("motion_start", 1.0)
    log.close(2.0)
    floor = Path(str(path) + ".seq")
    assert floor.read_text() == "00000000000000000001\n"
    floor.write_text("10000000000000000001\n")
    caplog.set_level(logging.WARNING, logger="wattgate.eventlog")
    log = EventLog(str(path))
    assert log.append("motion_end", 3.0)["seq"] == 2
    assert any(str(floor) in r.getMessage() for r in caplog.records)
    log.close(4.0)


def test_a_flush_after_the_clock_was_set_forward_does_not_read_the_kept_events(
    tmp_path: Path,
) -> None:
    """Kept by the boot clock, the events stamped 1970 are all old by their stamps: a flush
    that looked for the first recent stamp read every one of them, once a second, for the
    30 days they are kept. Counted in SQLite's VM steps, not in time."""
    log = EventLog(str(tmp_path / "events.db"))
    for i in range(20_000):
        log.append("motion_start", 10.0 + i / 1000)  # the clock at boot
    assert log.flush(30.0) is True
    assert log.flush(1.8e9) is True  # NTP has set it: none goes
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 100
        return 0

    log.append("motion_end", 1.8e9 + 1)
    log._db.set_progress_handler(count, 100)
    assert log.flush(1.8e9 + 1) is True
    log._db.set_progress_handler(None, 0)
    assert steps < 20_000  # reading the 20 000 kept events takes several steps each
    assert log.oldest_seq() == 1
    log.close(1.8e9 + 2)
