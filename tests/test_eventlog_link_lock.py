"""One daemon per database, also when one state_dir's events.db links to another's.

The lock was taken beside the path given, not beside the file SQLite opens (it follows
the link): a daemon on state_dir A, whose events.db links to B/events.db, locked
A/events.db.lock, and one on state_dir B locked B/events.db.lock. Both opened the one
database, gave each number twice, and A's flushes failed for good on UNIQUE errors.

Real files, a real symbolic link, two real EventLogs in one process (flock is per open
file, so the second is refused as a second process would be).
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from wattgate.daemon.eventlog import EventLog


@pytest.mark.parametrize("first", ["link", "target"])
def test_a_log_and_a_link_to_it_are_one_log(tmp_path: Path, first: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "events.db").symlink_to(b / "events.db")
    paths = {"link": a / "events.db", "target": b / "events.db"}
    second = "target" if first == "link" else "link"
    log = EventLog(str(paths[first]))
    try:
        with pytest.raises(OSError) as refused:
            EventLog(str(paths[second]))
        assert refused.value.errno == errno.EBUSY
        assert log.append("motion_start", 1.0)["seq"] == 1
        assert log.flush(2.0) is True
    finally:
        log.close(3.0)
    reopened = EventLog(str(paths[second]))  # the lock goes with the one that held it
    try:
        assert [e["seq"] for e in reopened.since(0, 10)] == [1]
    finally:
        reopened.close(4.0)
