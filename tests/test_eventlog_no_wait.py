"""An append or an `events` read never waits for a flush that is writing.

A flush waits for a sync of the -wal (on an SD card under writeback, a second or more) or
for another process's lock on the database, up to BUSY_TIMEOUT_MS. The daemon flushes on
a thread of its own and appends and reads on its event loop, so an append that waited for
the flush held every client's results and replies for as long. A slow card cannot be made
here, so the wait is the lock's: the test holds a write lock on events.db from another
connection, as a backup tool or an `sqlite3` shell would, with BUSY_TIMEOUT_MS raised to
an hour, so the flush waits until the test lets the lock go. What happens meanwhile is
checked by ordering (it is done while the lock is still held), not by timing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wattgate.daemon.eventlog as eventlog
from wattgate.daemon.eventlog import EventLog

PATIENCE_S = 30.0  # generous: a shared machine may be slow, and nothing waits this long


class HeldFlush:
    """A flush of `log` on a thread of its own, kept waiting for a write lock on the
    database that another connection holds until `release`."""

    def __init__(self, log: EventLog, path: Path) -> None:
        self.log = log
        self.holder = sqlite3.connect(path, isolation_level=None, timeout=PATIENCE_S)
        self.holder.execute("BEGIN IMMEDIATE")  # the write lock, held until `release`
        self.writing = threading.Event()
        self.result: list[bool] = []
        commit = log._commit

        def noted(*args: Any) -> tuple[int, int]:  # calls the real one: only the order is noted
            self.writing.set()
            return commit(*args)

        log._commit = noted  # type: ignore[method-assign, assignment]
        self.thread = threading.Thread(target=lambda: self.result.append(log.flush(1000.0)))
        self.thread.start()
        assert self.writing.wait(PATIENCE_S), "the flush never began to write"

    def release(self) -> bool:
        """Let the flush have the database; what it returned."""
        if self.holder.in_transaction:
            self.holder.execute("ROLLBACK")
        self.holder.close()
        self.thread.join(PATIENCE_S)
        assert not self.thread.is_alive(), "the flush did not end once the lock was free"
        return self.result[0]


def done_while_held(work: Callable[[], Any]) -> Any:
    """work() on another thread; what it returned, asserted to come while the flush waits
    (within PATIENCE_S, the flush still held)."""
    results: list[Any] = []
    finished = threading.Event()

    def run() -> None:
        results.append(work())
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(PATIENCE_S), "it waited for the flush"
    return results[0]


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Flushes that wait an hour for a lock on the database."""
    monkeypatch.setattr(eventlog, "BUSY_TIMEOUT_MS", 3_600_000)
    yield


def seqs_on_disk(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]


def test_appends_and_reads_go_on_while_a_flush_waits(patient: None, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    written = [log.append("motion_start", 100.0)["seq"]]
    assert log.flush(1000.0)
    in_flight = [log.append("detection", 101.0, label="cat")["seq"]]
    held = HeldFlush(log, path)
    try:
        appended = done_while_held(lambda: [log.append("motion_end", 102.0 + i)["seq"]
                                            for i in range(3)])
        served = done_while_held(lambda: [e["seq"] for e in log.since(0, 100)])
        oldest = done_while_held(log.oldest_seq)
        assert served == written + in_flight + appended
        assert done_while_held(lambda: [e["seq"] for e in log.since(written[0], 2)]) == (
            in_flight + appended[:1])
        assert oldest == written[0]
    finally:
        flushed = held.release()
    assert flushed is False  # the events appended while it waited are still held
    assert [e["seq"] for e in log.since(0, 100)] == written + in_flight + appended
    assert seqs_on_disk(path) == written + in_flight
    assert log.flush(1001.0)
    assert seqs_on_disk(path) == written + in_flight + appended  # each once, in order
    log.close(1002.0)
    reopened = EventLog(str(path))
    try:
        assert [e["seq"] for e in reopened.since(0, 100)] == written + in_flight + appended
        assert reopened.append("motion_start", 103.0)["seq"] == appended[-1] + 1
    finally:
        reopened.close(1003.0)


def test_an_append_past_the_reserved_numbers_does_not_wait_for_a_flush(
    patient: None, tmp_path: Path,
) -> None:
    """More events during one flush than the numbers reserved: the new block is kept in
    `.seq` (synced) without the database, and a restart after an unclean exit (no close,
    no flush after the held one) still numbers past every seq given out."""
    path = tmp_path / "events.db"
    log = EventLog(str(path), seq_block=4)
    log.append("motion_start", 100.0)
    held = HeldFlush(log, path)
    try:
        given = done_while_held(lambda: [log.append("detection", 101.0 + i)["seq"]
                                         for i in range(20)])
        floor = int((tmp_path / "events.db.seq").read_text())
        assert floor >= given[-1]
    finally:
        assert held.release() is False  # the 20 appended meanwhile are held
    log._release_lock()  # as at an unclean exit: nothing more is written
    log._db.close()
    reopened = EventLog(str(path), seq_block=4)
    try:
        assert reopened.append("motion_end", 200.0)["seq"] > given[-1]
    finally:
        reopened.close(1003.0)
