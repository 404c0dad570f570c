"""Numbering goes on past every number still readable when the database is found damaged.

A database found damaged at start is set aside and numbering went on from its copy of the
reservation, `events.db.seq`, alone. When that copy was unreadable too (garbage, a number
past SEQ_MAX), missing, or lower than the database (an old copy put back), numbering began
again at 1 or below the events clients had been sent, and gave their numbers to new
events, though the damaged file still held how far it had gone: damage in one page or in
one of its two numbers leaves the others readable. The highest of every number still
readable is now taken. Real SQLite files, damaged as storage damages them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.test_eventlog_edges import _spoil_page
from wattgate.daemon.eventlog import FLOOR_SUFFIX, SEQ_MAX, EventLog

# How the database is damaged: a number past what the log numbers from, or a page of
# garbage in a table that holds no seq.
DAMAGE = {
    "sqlite_sequence": "UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'",
    "seq_reserved": "UPDATE seq_reserved SET upto = ?",
    "boot page": None,
}
# The copy of the reservation beside it, as storage or an admin may leave it.
COPIES = {
    "garbage": "not a number\n",
    "past SEQ_MAX": f"{SEQ_MAX * 4:020d}\n",
    "an old one": f"{1:020d}\n",
    "missing": None,
}


def _damage(path: Path, how: str) -> None:
    if (update := DAMAGE[how]) is not None:
        with sqlite3.connect(path) as db:
            assert db.execute(update, (SEQ_MAX + 5,)).rowcount == 1
        db.close()
    else:
        _spoil_page(path, "boot")


def _spoil_copy(path: Path, how: str) -> None:
    copy = path.with_name(path.name + FLOOR_SUFFIX)
    if (text := COPIES[how]) is None:
        copy.unlink()
    else:
        copy.write_text(text)


@pytest.mark.parametrize("copy", sorted(COPIES))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_log_with_its_copy_lost_too_numbers_past_every_event_sent(
    tmp_path: Path, damage: str, copy: str
) -> None:
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    seen = [log.append("detection", float(i), frame=i)["seq"] for i in range(7)]
    log.close(7.0)
    _damage(path, damage)
    _spoil_copy(path, copy)
    log = EventLog(str(path))
    try:
        assert (tmp_path / "events.db.damaged").exists()
        assert log.last_seq >= seen[-1]
        new = log.append("motion_start", 8.0)["seq"]
        assert new > seen[-1]
        assert log.flush(8.0) is True
        assert log.oldest_seq() == new  # the events of the damaged file are lost, as pruned
    finally:
        log.close(9.0)
    reopened = EventLog(str(path))  # the new log carries the numbering on
    try:
        assert reopened.oldest_seq() == new
        assert reopened.append("motion_end", 10.0)["seq"] == new + 1
    finally:
        reopened.close(11.0)


def test_numbers_sent_live_and_never_written_are_not_given_again(tmp_path: Path) -> None:
    """After an unclean exit the events of the last second were sent and not written: the
    damaged file's reservation is above them, and numbering goes on after it."""
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    for i in range(5):
        log.append("detection", float(i), frame=i)
    assert log.flush(5.0) is True
    sent = [log.append("detection", 6.0 + i)["seq"] for i in range(3)]  # never written
    log._release_lock()  # as at a kill: nothing more is written
    log._db.close()
    _damage(path, "boot page")
    _spoil_copy(path, "garbage")
    log = EventLog(str(path))
    try:
        assert log.append("motion_start", 10.0)["seq"] > sent[-1]
    finally:
        log.close(11.0)


def test_one_event_numbered_out_of_range_does_not_hide_the_others(tmp_path: Path) -> None:
    """Both numbers damaged and the newest event's seq too: the events below it still say
    how far numbering had gone (the newest in range, not the newest, which is dropped)."""
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    seen = [log.append("detection", float(i), frame=i)["seq"] for i in range(7)]
    log.close(7.0)
    with sqlite3.connect(path) as db:
        for update in ("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'",
                       "UPDATE seq_reserved SET upto = ?",
                       "UPDATE events SET seq = ? WHERE seq = (SELECT MAX(seq) FROM events)"):
            assert db.execute(update, (SEQ_MAX + 5,)).rowcount == 1
    db.close()
    _spoil_copy(path, "missing")
    log = EventLog(str(path))
    try:
        assert (tmp_path / "events.db.damaged").exists()
        assert log.append("motion_start", 8.0)["seq"] > seen[-2]
    finally:
        log.close(9.0)
