"""Events held while writes fail stay within `max_bytes` of memory, as the log promises.

Only the text each event is stored as was counted against the bound, not the dict, the
values in it and the body string each held event keeps: 100 000 detections held with the
default bounds took about 6 times `max_bytes` (68 MB where 10.8 MB were counted), enough
on a 512 MB board, with a card that fails writes for hours, for the OOM killer.

Writes fail as they do in the field when another process holds the database: a second
connection keeps an EXCLUSIVE lock on the real file. Memory is what Python allocated for
it (tracemalloc), not the process's RSS, which the allocator and the machine make noisy.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattgate.daemon.eventlog import ROW_BYTES_SQL, EventLog

BOUND = 1 << 20
# Besides the held events, the log allocates a little while it holds them: the error and
# traceback of the last failed write, the deque's blocks as they are made, and pymalloc
# rounds each request up to 8 bytes (sys.getsizeof does not). A tenth covers them.
MARGIN = BOUND // 10


@pytest.fixture
def locked_log(tmp_path: Path) -> Iterator[EventLog]:
    """A log with `max_bytes` BOUND (and no bound by count in reach) that cannot write:
    another connection holds the database's EXCLUSIVE lock until the test is done."""
    path = tmp_path / "events.db"
    log = EventLog(str(path), max_events=10**6, max_bytes=BOUND)
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    # The streak's first failure, before anything is measured: its warning's record, kept
    # by pytest's log capture, holds the error, whose traceback holds the events the
    # flush tried to write, and would keep a thousand events alive past their drop.
    assert log.flush(0.0) is False
    try:
        yield log
    finally:
        other.rollback()
        other.close()
        log.close(0.0)


def _held_growth(log: EventLog, count: int) -> int:
    """Bytes Python holds more after `count` detections are appended to log, as the
    pipeline logs them (new values each time), with a failing flush every thousand."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            log.append("detection", 1000.0 + i, labels=["person", f"track{i}"], frame=i,
                       result_seq=i + 1, score=0.5 + i / 1e6)
            if i % 1000 == 999:
                assert log.flush(1000.0 + i) is False
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_events_held_while_writes_fail_stay_within_max_bytes_of_memory(
    locked_log: EventLog,
) -> None:
    # Past the bound whichever way it counts: the stored text alone is ~120 B an event.
    count = 2 * BOUND // 100
    growth = _held_growth(locked_log, count)
    held = locked_log.since(0, count)
    assert held and held[-1]["seq"] == locked_log.last_seq  # the newest are the ones kept
    assert len(held) < count  # the oldest went, for the bound
    assert growth <= BOUND + MARGIN, f"{len(held)} events held in {growth} bytes"
    # and the count is not so cautious that it holds far fewer than the bound allows
    assert growth >= BOUND // 2, f"{len(held)} events held in {growth} bytes"


def test_a_long_text_held_is_counted_as_both_copies_of_it(locked_log: EventLog) -> None:
    """A camera_lost's text is held twice, in the event and in the body it is stored as,
    each copy of an emoji 4 bytes a character: twice what its stored text counted."""
    growth = _held_growth_of_texts(locked_log, 200)
    assert growth <= BOUND + MARGIN, growth


def _held_growth_of_texts(log: EventLog, count: int) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            log.append("camera_lost", float(i), reason=f"{i} " + "\N{GRINNING FACE}" * 4000)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_held_events_written_at_last_are_counted_as_the_table_holds_them(
    tmp_path: Path,
) -> None:
    """Held past the bound while writes fail, then written by one flush: the held bytes'
    running total is what the flush adds to the log's bytes, so that total matches the
    table, and nothing is counted as held after."""
    path, bound = tmp_path / "events.db", BOUND // 4
    log = EventLog(str(path), max_events=10**6, max_bytes=bound)
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        assert log.flush(0.0) is False  # writes fail from here: memory is what is bound
        for i in range(2 * bound // 100):
            log.append("detection", 1000.0 + i, labels=["person", f"track{i}"], frame=i)
            if i % 1000 == 999:
                assert log._held_memory <= bound
                assert log.flush(1000.0 + i) is False
        assert log._held_bytes == sum(h.size for h in log._held)
        held = [e["seq"] for e in log.since(0, 10**6)]
        assert held[0] > 1  # the oldest were dropped, for the bound
    finally:
        other.rollback()
        other.close()
    try:
        assert log.flush(3000.0) is True
        with sqlite3.connect(path) as db:
            rows, size = db.execute(
                f"SELECT COUNT(*), TOTAL({ROW_BYTES_SQL}) FROM events").fetchone()
            written = [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
        db.close()
        assert written == held
        assert (log._rows, log._stored) == (rows, int(size))
        assert (log._held_bytes, log._held_memory) == (0, 0)
    finally:
        log.close(3001.0)


def test_events_held_when_writes_begin_to_fail_are_brought_within_max_bytes_of_memory(
    tmp_path: Path,
) -> None:
    """Until a write fails, the events held for the next flush are bound by their stored
    bytes, which take about 6 times as much in memory. The failure that begins a streak
    brings them within `max_bytes` of memory at once; they stayed about 4 times past it
    until the next event was appended, for as long as no event came."""
    path, bound = tmp_path / "events.db", BOUND // 4
    log = EventLog(str(path), max_events=10**6, max_bytes=bound)
    try:
        count = bound // 150  # stored, most of `bound`: several times it in memory
        for i in range(count):
            log.append("detection", 1000.0 + i, labels=["person", f"track{i}"], frame=i)
        assert log._held_memory > 2 * bound, "the burst is past the bound in memory"
        other = sqlite3.connect(path)
        other.execute("BEGIN EXCLUSIVE")
        try:
            assert log.flush(2000.0) is False
        finally:
            other.rollback()
            other.close()
        assert 0 < log._held_memory <= bound
        held = [e["seq"] for e in log.since(0, 10**6)]
        assert held[-1] == log.last_seq and held[0] > 1  # the newest kept, the oldest dropped
        assert log._held_memory == sum(h.memory for h in log._held)
    finally:
        log.close(3000.0)
