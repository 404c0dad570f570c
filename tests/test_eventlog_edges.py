"""The event log on files that storage has damaged, and on a daemon that was killed.

Flash without power-loss protection can leave any page of `events.db` garbage: a page
of the free list or of a small table that no read touches at start, or a few bytes inside
one event. Real SQLite files in tmp_path, damaged byte by byte; real daemons where the
exit code or the protocol answer is what is judged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from wattgate.daemon.eventlog import EventLog

StartDaemon = Callable[..., DaemonProcess]


def _history(path: Path, events: int = 300, kept: int = 100) -> int:
    """A closed log of `kept` events out of `events` (the others pruned by count, so
    their pages are on the free list); returns the last seq."""
    log = EventLog(str(path), max_events=events)
    for i in range(events):
        log.append("detection", float(i), note="x" * 500)
    assert log.flush(float(events)) is True
    log.close(float(events))
    log = EventLog(str(path), max_events=kept)
    assert log.flush(float(events)) is True
    log.close(float(events))
    return log.last_seq


def _spoil_page(path: Path, where: str) -> None:
    """Fill one page of the database file with garbage: the root page of table `where`,
    or the free list's first trunk page for "free list" (file format:
    https://sqlite.org/fileformat2.html, header offset 32)."""
    db = sqlite3.connect(path)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master"))
    db.close()
    with path.open("r+b") as f:
        if where == "free list":
            f.seek(32)
            (page,) = struct.unpack(">I", f.read(4))
            assert page != 0, "no free page to spoil"
        else:
            page = roots[where]
        f.seek((page - 1) * page_size)
        f.write(bytes(range(256)) * (page_size // 256))


@pytest.mark.parametrize("where", ["free list", "seq_reserved", "boot", "sqlite_sequence"])
def test_a_damaged_page_outside_the_events_is_found_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """Opening read only the events table's pages: a damaged free list failed every write
    after it, at every start, with a warning and every new event lost; a damaged small
    table stopped the log from opening at all. Either is now set aside as damaged."""
    path = tmp_path / "events.db"
    last = _history(path)
    _spoil_page(path, where)
    caplog.set_level(logging.ERROR, logger="wattgate.eventlog")
    log = EventLog(str(path))
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert (tmp_path / "events.db.damaged").exists()
    new = [log.append("motion_start", 400.0 + i, note="y" * 2000)["seq"] for i in range(5)]
    assert new[0] > last
    assert log.flush(405.0) is True
    log.close(406.0)
    assert [e["seq"] for e in EventLog(str(path)).since(0, 100)] == new


def test_a_daemon_whose_log_has_a_damaged_seq_table_starts_and_numbers_on(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """It exited 69 (cannot open the event log: database disk image is malformed)."""
    state = tmp_path / "state"
    state.mkdir()
    last = _history(state / "events.db")
    _spoil_page(state / "events.db", "seq_reserved")
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          daemon={"state_dir": str(state)})
    with daemon.connect() as client:
        assert client.request("events", since=0)["events"] == []
    assert daemon.stop() == 0
    assert "is damaged" in daemon.log()
    log = EventLog(str(state / "events.db"))
    assert log.append("motion_start", 500.0)["seq"] > last
    log.close(501.0)


def _spoil_event(path: Path, mark: str, damage: bytes) -> None:
    """Overwrite the start of `mark` inside one stored event with `damage`: flash that
    flipped bits in a row, where no page check can see it (SQLite keeps no checksums)."""
    data = path.read_bytes()
    at = data.index(mark.encode())
    assert data.count(mark.encode()) == 1
    path.write_bytes(data[:at] + damage + data[at + len(damage):])


@pytest.mark.parametrize("damage", [b"\xff\xfe", b'"}'], ids=["not-utf-8", "not-json"])
def test_an_event_damaged_in_its_row_does_not_hide_the_events_after_it(
    start_daemon: StartDaemon, tmp_path: Path, damage: bytes
) -> None:
    """Every `events` answer that reached the damaged row failed, `unavailable` or an
    internal error, for as long as it was kept: a client could never read past it. It is
    now left out (and logged), and every other event is answered."""
    state = tmp_path / "state"
    log = EventLog(str(state / "events.db"))
    for i in range(6):
        log.append("detection", float(i), note=f"event-{i}" + "x" * 100)
    log.close(10.0)
    _spoil_event(state / "events.db", "event-2", damage)
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          daemon={"state_dir": str(state)})
    with daemon.connect() as client:
        whole = client.request("events", since=0)
        one_by_one = [client.request("events", since=since, limit=1)
                      for since in range(6)]
    assert daemon.stop() == 0
    assert [e["seq"] for e in whole["events"]] == [1, 2, 4, 5, 6]
    assert [e["note"][:7] for e in whole["events"]] == [
        "event-0", "event-1", "event-3", "event-4", "event-5"]
    # asked one at a time from before the damaged row, the next good one is the answer
    assert [[e["seq"] for e in a["events"]] for a in one_by_one] == [
        [1], [2], [4], [4], [5], [6]]
    assert [a["more"] for a in one_by_one] == [True] * 5 + [False]
    assert "seq 3" in daemon.log() and "damaged" in daemon.log()


# Run in a child: RLIMIT_FSIZE makes a write past it fail with EFBIG, as a full state
# partition makes it fail with ENOSPC, without filling this machine's disk. CPython
# ignores SIGXFSZ, so the write returns the error instead of killing the process.
FILE_LIMIT_CHILD = """
import json, resource, sys
from wattgate.daemon.eventlog import EventLog
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
log = EventLog(sys.argv[1], max_events=100)
flushed = []
for i in range(1000):
    log.append("detection", float(i), note=["x" * 1000])
    if i % 10 == 9:
        flushed.append(log.flush(float(i)))
log.close(1000.0)
print(json.dumps(flushed))
"""


def test_a_wal_that_cannot_grow_to_its_checkpoint_size_does_not_stop_the_writes(
    tmp_path: Path,
) -> None:
    """The WAL is copied into the database once it holds WAL_MAX_BYTES: one that the disk
    (or the file size limit) stopped short of that was never copied back, so it never
    started again from its beginning, and every write after the first that found no room
    failed, for as long as the daemon ran; its events were dropped."""
    path = tmp_path / "events.db"
    done = subprocess.run(
        [sys.executable, "-c", FILE_LIMIT_CHILD, str(path), str(400 * 1024)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    flushed = json.loads(done.stdout)
    assert flushed == [True] * 100, done.stderr
    log = EventLog(str(path), max_events=100)
    assert [e["seq"] for e in log.since(0, 1000)] == list(range(901, 1001))
    log.close(1001.0)


def test_after_a_damaged_log_is_set_aside_oldest_seq_is_above_the_numbers_lost(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The new log said `last_seq` 0 and `oldest_seq` 1 although numbers up to the copy of
    the reservation had been given out: a client asking `since` the last event it saw got
    no events and could not tell they were lost. Across a second start too."""
    state = tmp_path / "state"
    state.mkdir()
    last = _history(state / "events.db")
    _spoil_page(state / "events.db", "seq_reserved")
    for start in range(2):
        daemon = start_daemon(camera={"source": "synthetic:empty"},
                              daemon={"state_dir": str(state)})
        with daemon.connect() as client:
            answer = client.request("events", since=last - 10)
        assert daemon.stop() == 0
        assert answer["events"] == []
        assert (answer["oldest_seq"], answer["last_seq"]) == (last + 1, last), start


@pytest.mark.parametrize("lost", ["empty", "missing"])
def test_a_log_emptied_or_deleted_has_oldest_seq_above_the_numbers_lost(
    tmp_path: Path, lost: str
) -> None:
    """An events.db cut to 0 bytes (a power cut) or deleted opened as a new database,
    nothing set aside: `last_seq` 0 and `oldest_seq` 1 while the next seq went on from the
    copy of the reservation, so the lost events did not show. Across a second open too."""
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    for i in range(5):
        log.append("detection", float(i))
    log.close(5.0)
    if lost == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    for start in range(2):
        log = EventLog(str(path))
        assert (log.last_seq, log.oldest_seq()) == (5, 6), start
        assert log.since(0, 10) == []
        log.close(6.0)
    log = EventLog(str(path))
    assert log.append("detection", 7.0)["seq"] == 6
    log.close(7.0)


def test_an_event_whose_body_is_null_is_left_out_as_damaged(tmp_path: Path) -> None:
    """A NULL body raised TypeError while its error message was built, out of `since`,
    instead of the event being left out as damaged."""
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    for i in range(3):
        log.append("detection", float(i))
    log.close(3.0)
    db = sqlite3.connect(path)  # a NULL only damage can write: the schema forbids it
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_master SET sql = replace(sql, 'body TEXT NOT NULL', 'body TEXT')"
               " WHERE name = 'events'")
    db.commit()
    db.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET body = NULL WHERE seq = 2")
    db.commit()
    db.close()
    log = EventLog(str(path))
    assert [e["seq"] for e in log.since(0, 10)] == [1, 3]
    log.close(3.0)
