"""What `EventLog.flush` returns: whether nothing is held after it.

A flush writes the events held when it begins; events appended while it writes (the
daemon appends on its event loop while the flush runs on a thread of its own) are held
for the next one. It returned True for those too, saying all was written while they were
only in memory. Real SQLite files; the append is made from inside the flush's write, on
the real write, so that it lands while the write runs whatever the machine's speed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from wattgate.daemon.eventlog import EventLog


def _written(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    db.close()
    return seqs


def test_a_flush_with_events_appended_while_it_wrote_says_they_are_still_held(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    try:
        first = log.append("motion_start", 1.0)["seq"]
        commit = log._commit
        late: list[int] = []

        def appending_meanwhile(*args: Any) -> tuple[int, int]:
            if not late:  # once: as the event loop appends while the flush writes
                late.append(log.append("detection", 2.0, frame=2)["seq"])
            return commit(*args)

        log._commit = appending_meanwhile  # type: ignore[method-assign, assignment]
        assert log.flush(3.0) is False  # the late event is held, not written
        assert _written(path) == [first]
        assert [e["seq"] for e in log.since(0, 10)] == [first, *late]  # and served
        log._commit = commit  # type: ignore[method-assign]
        assert log.flush(4.0) is True
        assert _written(path) == [first, *late]
        assert log.flush(5.0) is True  # nothing to write, nothing held
    finally:
        log.close(6.0)
