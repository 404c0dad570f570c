"""The event log found damaged while the daemon runs: flash that lost a page under it.

Before, a write that met SQLITE_CORRUPT or SQLITE_NOTADB failed on every flush until the
daemon stopped (its events held in memory, then lost at exit), and every `events` answer
was `unavailable`: the damaged file was only set aside at the next start. Now it is set
aside when the damage is met, and a new log begins with the events not yet written.

The damage is made as storage makes it: the WAL is copied into the database file by
another connection (so the pages are read from the file again), then a page of the file
is overwritten with garbage. Real SQLite files and real daemons.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, pinnable_board
from tests.test_eventlog_edges import _spoil_page
from wattgate.client import Client
from wattgate.daemon.eventlog import EventLog

StartDaemon = Callable[..., DaemonProcess]
PLACES = ["header", "events", "sqlite_sequence", "seq_reserved"]
HANG_S = 60.0  # a guard against a hang only, never a measure


def _damage(path: Path, where: str) -> None:
    """Copy the WAL into the file, then fill the file's header ("header") or the root page
    of table `where` with garbage. The reset WAL makes the log's connection read its pages
    from the file again, as it does once they leave its cache."""
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    db.close()
    if where == "header":
        with path.open("r+b") as f:
            f.write(b"not a database! " * 6)
    else:
        _spoil_page(path, where)


def _damaged_log(path: Path, where: str, count: int, note: str = "",
                 **options: Any) -> tuple[EventLog, list[int]]:
    """A log at path (EventLog options) given `count` detections (with `note`, if any),
    flushed, then damaged at `where` (_damage); and the seqs of those events."""
    log = EventLog(str(path), **options)
    fields = {"note": note} if note else {}
    seqs = [log.append("detection", float(i), **fields)["seq"] for i in range(count)]
    assert log.flush(float(count)) is True
    _damage(path, where)
    return log, seqs


def _written(path: Path) -> list[int]:
    """The seqs in the file, as another process reads them."""
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        db.close()


@pytest.mark.parametrize("where", PLACES)
def test_a_write_that_meets_damage_sets_the_log_aside_and_keeps_the_new_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    path = tmp_path / "events.db"
    # seq_block: the flush after the damage reserves numbers
    log, lost = _damaged_log(path, where, 20, note="x" * 200, seq_block=8)
    caplog.set_level(logging.ERROR, logger="wattgate.eventlog")
    new = [log.append("motion_start", 30.0 + i)["seq"] for i in range(3)]
    assert log.flush(33.0) is True
    assert new[0] == lost[-1] + 1
    assert (tmp_path / "events.db.damaged").exists()
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and str(path) in errors[0] and "events.db.damaged" in errors[0]
    assert f"up to seq {lost[-1]}" in errors[0]
    assert [e["seq"] for e in log.since(0, 100)] == new
    assert (log.oldest_seq(), log.last_seq) == (new[0], new[-1])
    assert _written(path) == new
    log.close(34.0)
    log = EventLog(str(path))  # after a restart too, and numbering goes on
    assert [e["seq"] for e in log.since(0, 100)] == new
    assert log.append("motion_end", 35.0)["seq"] > new[-1]
    log.close(36.0)


@pytest.mark.parametrize("where", ["header", "events"])
def test_a_query_that_meets_damage_is_answered_from_a_new_log(
    tmp_path: Path, where: str
) -> None:
    """The lost events are answered as pruned ones are: left out, `oldest_seq` above them."""
    path = tmp_path / "events.db"
    log, _ = _damaged_log(path, where, 20)
    held = log.append("motion_start", 30.0)["seq"]
    assert [e["seq"] for e in log.since(3, 100)] == [held]
    assert (log.oldest_seq(), log.last_seq) == (held, held)
    assert (tmp_path / "events.db.damaged").exists()
    assert log.flush(31.0) is True
    assert _written(path) == [held]
    log.close(32.0)


def test_a_log_damaged_with_nothing_held_keeps_its_last_seq_after_a_restart(
    tmp_path: Path,
) -> None:
    """The new log records the last seq given out before it, or a restart read 0 and 1."""
    path = tmp_path / "events.db"
    log, _ = _damaged_log(path, "events", 5)
    assert log.since(0, 10) == []
    assert (log.oldest_seq(), log.last_seq) == (6, 5)
    log.close(6.0)
    log = EventLog(str(path))
    assert (log.oldest_seq(), log.last_seq) == (6, 5)
    assert log.append("detection", 7.0)["seq"] == 6
    log.close(7.0)


def test_a_new_log_that_opens_only_at_the_second_try_still_records_the_lost_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage met by a query with nothing held; the new database does not open at once
    (the open failing once is injected around EventLog._connect: a transient EMFILE or
    CANTOPEN at that very call cannot be arranged on a real file without failing the move
    before it). The next call opens it, and the next flush still records the lost range
    and this boot, as a new log opened at the first try does."""
    def after_damage(inject: bool) -> tuple[int, int, list[Any]]:
        path = tmp_path / ("injected" if inject else "plain") / "events.db"
        path.parent.mkdir()
        log, _ = _damaged_log(path, "events", 20, note="x" * 200, seq_block=8)
        connect, failed = log._connect, list[bool]()

        def once_failing() -> None:
            if not failed:
                failed.append(True)
                raise sqlite3.OperationalError("unable to open database file")
            connect()
        if inject:
            monkeypatch.setattr(log, "_connect", once_failing)
            with pytest.raises(sqlite3.DatabaseError):
                log.since(0, 100)  # moved aside; the new one did not open
        assert log.since(0, 100) == []
        assert log.flush(34.0)
        log.close(35.0)
        db = sqlite3.connect(path)
        boots = db.execute("SELECT COUNT(*) FROM boot").fetchall()
        db.close()
        reopened = EventLog(str(path), seq_block=8)
        try:
            return reopened.last_seq, reopened.oldest_seq(), boots
        finally:
            reopened.close(36.0)
    assert after_damage(inject=True) == after_damage(inject=False)


def _pin(client: Client, profile: str) -> None:
    client.request("profile", set=profile)


def _events_until(client: Client, wanted: int) -> dict[str, Any]:
    """The `events` answer once it holds `wanted` events (a pin's event comes from the
    power controller's next step)."""
    deadline = time.monotonic() + HANG_S
    while True:
        answer: dict[str, Any] = client.request("events", since=0)
        if len(answer["events"]) >= wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def _wait_written(path: Path, count: int) -> None:
    deadline = time.monotonic() + HANG_S
    while len(_written(path)) < count:
        assert time.monotonic() < deadline, f"not {count} events written within {HANG_S} s"
        time.sleep(0.05)


def test_a_daemon_whose_log_is_damaged_while_it_runs_goes_on_logging(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Events pinned after the damage were held until exit and lost, and `events` said
    `unavailable` until a restart. Now they are answered at once and kept on disk."""
    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    run_dir = config.parent
    path = run_dir / "state" / "events.db"
    daemon = start_daemon(config=config)
    with daemon.connect() as client:
        _pin(client, "powersave")
        before = _events_until(client, 2)["events"]
        lost = [e["seq"] for e in before]
        _wait_written(path, len(lost))
        _damage(path, "header")
        _pin(client, "performance")
        answer = _events_until(client, 1)
        assert answer["oldest_seq"] == lost[-1] + 1
        assert [(e["seq"], e["kind"], e["profile"])
                for e in answer["events"]] == [(lost[-1] + 1, "profile_change", "performance")]
        _wait_written(path, 1)
        assert client.request("status")["events"]["last_seq"] == lost[-1] + 1
    assert daemon.stop() == 0
    text = daemon.log()
    assert text.count("found while running") == 1
    assert "events.db.damaged" in text and "could not be written" not in text
    again = start_daemon(config=config)
    with again.connect() as client:
        after = client.request("events", since=0)
    assert again.stop() == 0
    assert after["events"][0]["profile"] == "performance"  # then the new start's own
    assert after["events"][0]["seq"] == after["oldest_seq"] == lost[-1] + 1
