"""The event log on storage that stays bad: damage met again and again while the daemon runs.

Storage that damages every new file set the log aside on every flush, each time with the
whole "moved to ... a new log started" error: one a second for as long as it lasted. And a
damaged file that could not be moved aside (a read-only directory) was opened again and
checked page by page (PRAGMA quick_check) by every later flush and every `events` query.

Real SQLite files damaged on purpose (tests/test_eventlog_midrun.py's _damage), a real
read-only directory, entered as another user where the tests run as root (who may write
any directory).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_as
from tests.test_eventlog_midrun import _damage, _damaged_log, _written

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian
STREAK = 12


def test_storage_that_damages_every_new_log_costs_one_error_per_streak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each new database is found damaged at the next flush: one full error line for the
    streak (and a short one at the tenth), one line when a write works again, and every
    held event written to the log of its flush with its number."""
    path = tmp_path / "events.db"
    log, lost = _damaged_log(path, "header", 5)
    caplog.set_level(logging.INFO, logger="wattgate.eventlog")
    seqs = []
    for i in range(STREAK):
        if i:
            _damage(path, "header")
        seqs.append(log.append("motion_start", 10.0 + i)["seq"])
        assert log.flush(10.0 + i) is True
        assert _written(path) == [seqs[-1]]
        assert [e["seq"] for e in log.since(0, 10)] == [seqs[-1]]
    assert seqs == list(range(lost[-1] + 1, lost[-1] + 1 + STREAK))
    assert (tmp_path / "events.db.damaged").exists()
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == ["ERROR", "WARNING"], records
    assert "found while running" in records[0][1]
    assert "set aside 10 times in a row" in records[1][1] and len(records[1][1]) < 300
    caplog.clear()
    sound = log.append("motion_end", 30.0)["seq"]
    assert log.flush(30.0) is True
    assert _written(path) == [seqs[-1], sound]
    infos = [r.getMessage() for r in caplog.records]
    assert len(infos) == 1 and f"set aside {STREAK} times in a row" in infos[0], infos
    log.close(31.0)


def test_damage_met_once_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A streak of one needs no closing line: its error said it all."""
    path = tmp_path / "events.db"
    log, _ = _damaged_log(path, "events", 5)
    caplog.set_level(logging.INFO, logger="wattgate.eventlog")
    for i in range(3):
        log.append("motion_start", 10.0 + i)
        assert log.flush(10.0 + i) is True
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    log.close(20.0)


def _stuck_damage(state: Path) -> str:
    """What a log whose damaged file cannot be moved aside (state made read-only) does on
    later flushes and `events` queries, then once state is writable again, as JSON: the
    database opens it made (counted around EventLog._connect, which still opens them),
    what the calls returned, the seqs, and the log's lines."""
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(f"{record.levelname} {record.getMessage()}")  # type: ignore[method-assign]
    logger = logging.getLogger("wattgate.eventlog")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    path = state / "events.db"
    log, lost = _damaged_log(path, "events", 20, note="x" * 200, seq_block=8)
    os.chmod(state, 0o555)
    opens, connect = [], log._connect

    def counted(exclusive: bool = False) -> None:
        opens.append(exclusive)
        connect(exclusive)
    log._connect = counted  # type: ignore[method-assign]
    flushes, queries, held = [], [], []
    for i in range(6):
        held.append(log.append("motion_start", 30.0 + i)["seq"])
        flushes.append(log.flush(30.0 + i))
        try:
            queries.append(str(log.since(0, 100)))
        except sqlite3.Error as exc:
            queries.append(type(exc).__name__)
    stuck_opens, stuck_lines = len(opens), list(lines)
    os.chmod(state, 0o755)
    written = log.flush(40.0)
    served = [e["seq"] for e in log.since(0, 100)]
    log.close(41.0)
    logger.removeHandler(handler)
    return json.dumps({
        "lost": lost, "held": held, "flushes": flushes, "queries": queries,
        "stuck_opens": stuck_opens, "stuck_lines": stuck_lines, "written": written,
        "served": served, "on_disk": _written(path), "lines": lines[len(stuck_lines):],
    })


def test_a_damaged_log_that_cannot_be_moved_aside_is_not_reopened_on_every_call(
    reachable_tmp: Path,
) -> None:
    """Every flush and every `events` query opened the damaged file again and checked all
    its pages, to fail the move again: on a 16 MB log, a full read of it a second. Now
    they try only the move until it works; one warning for the streak; the held events are
    written once the directory is writable."""
    state = reachable_tmp / "state"
    state.mkdir()
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()  # root writes a 0555 directory
    os.chown(state, uid, uid if uid == NOBODY else os.getegid())
    report = json.loads(run_as(uid, NOBODY if uid == NOBODY else os.getegid(),
                               lambda: _stuck_damage(state)))
    assert report["flushes"] == [False] * 6
    assert report["queries"] == ["DatabaseError"] * 6
    assert report["stuck_opens"] == 0, report
    warnings = [line for line in report["stuck_lines"] if not line.startswith("DEBUG")]
    assert len(warnings) == 1 and "cannot be moved aside" in warnings[0], warnings
    assert report["written"] is True
    assert report["served"] == report["on_disk"] == report["held"]
    assert report["held"][0] == report["lost"][-1] + 1
    levels = [line.split()[0] for line in report["lines"]]
    assert levels == ["ERROR", "INFO"], report["lines"]
    assert "found while running" in report["lines"][0]
