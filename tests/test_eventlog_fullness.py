"""An event log that is damaged, empty or missing on a full disk still opens.

Each case alone was handled: a damaged file is set aside and a new log started, a full
disk opens the log with its index in memory and holds new events. Together they stopped
the start (the daemon exited 69, and systemd's RestartPreventExitStatus=69 kept it
down): the new database could not be made on the full disk, or the check of every page
that the full-disk open runs found the damage with nothing there to catch it. Now the
log opens without a database, holds the events in memory, and opens a new one on the
first flush after there is room again, numbering on past the reservation kept in .seq.

Real SQLite files on a real full file system (a 1 MiB tmpfs: `small_disk`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.test_eventlog import _fill, small_disk  # noqa: F401 (a fixture)
from tests.test_eventlog_edges import _spoil_page
from wattgate.daemon.eventlog import EventLog

# How the file is left before the disk fills: the header garbage (SQLite finds it when it
# opens the file, SQLITE_NOTADB), a table's page garbage (only the check of every page
# finds it, after the full disk was met), cut to 0 bytes (a power cut), or gone.
STATES = ["damaged header", "damaged page", "zero bytes", "missing"]


def _leave(path: Path, state: str) -> None:
    if state == "damaged header":
        with path.open("r+b") as f:
            f.write(b"not a database! " * 6)
    elif state == "damaged page":
        _spoil_page(path, "events")
    elif state == "zero bytes":
        path.write_bytes(b"")
    else:
        path.unlink()


@pytest.mark.parametrize("state", STATES)
def test_a_bad_log_on_a_full_disk_opens_and_writes_once_there_is_room(
    small_disk: Path, state: str, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    path = small_disk / "events.db"
    log = EventLog(str(path))
    for i in range(50):
        log.append("detection", float(i), note="x" * 100)
    log.close(60.0)
    reserved = int(Path(f"{path}.seq").read_text())
    _leave(path, state)
    _fill(small_disk)
    caplog.set_level(logging.INFO, logger="wattgate.eventlog")

    log = EventLog(str(path))
    try:
        first = log.append("motion_start", 100.0)["seq"]
        assert first > reserved
        assert log.last_seq == first
        second = log.append("motion_end", 101.0)["seq"]
        assert log.flush(102.0) is False  # no room yet: held
        lines = [r.getMessage() for r in caplog.records]
        assert not any("a new log started" in line for line in lines), lines
        if state.startswith("damaged"):
            assert (small_disk / "events.db.damaged").exists()
        (small_disk / "filler").unlink()
        assert log.flush(103.0) is True
        assert [e["seq"] for e in log.since(0, 100)] == [first, second]
        assert log.oldest_seq() == first
    finally:
        log.close(104.0)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    reopened = EventLog(str(path))
    try:
        assert [e["seq"] for e in reopened.since(0, 100)] == [first, second]
        assert reopened.append("detection", 105.0)["seq"] == second + 1
    finally:
        reopened.close(106.0)
