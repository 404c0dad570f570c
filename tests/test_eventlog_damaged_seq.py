"""A seq number in the database damaged past what the log can number from.

The highest seq written (sqlite_sequence) and the reservation (seq_reserved) were taken
from the database unchecked, while their copy in `events.db.seq` is checked against
SEQ_MAX. Near 2**63 the reservation made at open did not fit SQLite's integers: the
start raised OverflowError, the daemon exited 1 and systemd restarted it into the same
crash for ever. Between SEQ_MAX and 2**63 it opened, numbered events above SEQ_MAX, and
`events since` a seq a client had been sent live was `bad_request`.

Such a database is now damaged, as one whose pages fail the check is: set aside as
`events.db.damaged`, logged as an error, and numbering goes on from `events.db.seq`,
above every seq a client could have seen. Real SQLite files and a real daemon; the
damage is written as a flipped bit would leave it, by another connection.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from wattgate.daemon.eventlog import FLOOR_SUFFIX, SEQ_BLOCK, SEQ_MAX, EventLog

StartDaemon = Callable[..., DaemonProcess]

NEAR_2_63 = 2**63 - 10  # the reservation made at open did not fit: OverflowError
ABOVE_SEQ_MAX = SEQ_MAX + 5  # opened, and numbered past what `events since` takes
BLOCK_PAST_SEQ_MAX = SEQ_MAX - SEQ_BLOCK // 2  # the block reserved at open went past it
TABLES = {"sqlite_sequence": "UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'",
          "seq_reserved": "UPDATE seq_reserved SET upto = ?"}


def _logged_then_damaged(path: Path, table: str, value: int) -> list[int]:
    """A log at path given five events and closed; then `value` written into `table` by
    another connection. Returns the seqs of the events, the ones clients were sent."""
    log = EventLog(str(path))
    seqs = [log.append("detection", float(i), frame=i)["seq"] for i in range(5)]
    log.close(5.0)
    db = sqlite3.connect(path)
    try:
        assert db.execute(TABLES[table], (value,)).rowcount == 1
        db.commit()
    finally:
        db.close()
    return seqs


@pytest.mark.parametrize("value", [NEAR_2_63, ABOVE_SEQ_MAX, BLOCK_PAST_SEQ_MAX])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_seq_damaged_past_seq_max_sets_the_log_aside_and_numbering_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str, value: int
) -> None:
    path = tmp_path / "events.db"
    seen = _logged_then_damaged(path, table, value)
    floor = int((tmp_path / f"events.db{FLOOR_SUFFIX}").read_text())
    assert floor >= seen[-1]  # the copy is at or above every seq given out
    caplog.set_level(logging.ERROR, logger="wattgate.eventlog")
    log = EventLog(str(path))
    try:
        errors = [r.getMessage() for r in caplog.records]
        assert len(errors) == 1 and "events.db.damaged" in errors[0], errors
        assert str(value) in errors[0]  # says what was wrong
        assert (tmp_path / "events.db.damaged").exists()
        new = log.append("motion_start", 6.0)["seq"]
        assert seen[-1] < new == floor + 1
        assert log.flush(6.0) is True
        assert [e["seq"] for e in log.since(seen[-1], 10)] == [new]
        assert log.oldest_seq() == new  # the events of the damaged file are lost, as pruned
    finally:
        log.close(7.0)
    reopened = EventLog(str(path))  # the new log is sound: a restart goes on from it
    try:
        assert reopened.append("motion_end", 8.0)["seq"] == new + 1
    finally:
        reopened.close(9.0)
    assert (tmp_path / "events.db.damaged").exists()


def test_a_seq_within_the_bound_is_not_damage(tmp_path: Path) -> None:
    """The highest value a sound log can hold still opens as it is, its events kept."""
    path = tmp_path / "events.db"
    seen = _logged_then_damaged(path, "seq_reserved", SEQ_MAX - SEQ_BLOCK)
    log = EventLog(str(path), seq_block=SEQ_BLOCK)
    try:
        assert [e["seq"] for e in log.since(0, 10)] == seen
        assert log.append("motion_start", 6.0)["seq"] == SEQ_MAX - SEQ_BLOCK + 1
        assert log.flush(6.0) is True
    finally:
        log.close(7.0)
    assert not (tmp_path / "events.db.damaged").exists()


def test_a_daemon_whose_log_has_a_seq_near_2_63_starts_and_serves_events_since(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """It exited 1 with OverflowError at every start (a crash loop under systemd)."""
    state = tmp_path / "state"
    state.mkdir()
    seen = _logged_then_damaged(state / "events.db", "seq_reserved", NEAR_2_63)
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          daemon={"state_dir": str(state)})
    with daemon.connect() as client:
        answer = client.request("events", since=seen[-1])
    assert daemon.stop() == 0
    assert answer["events"] == []
    assert seen[-1] <= answer["last_seq"] <= SEQ_MAX
    assert "events.db.damaged" in daemon.log()
