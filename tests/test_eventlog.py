"""The event log keeps every event, in seq order, across reopen, and stays bounded."""

from __future__ import annotations

from pathlib import Path

from wattgate.daemon.eventlog import EventLog


def test_seq_survives_reopen_and_held_events_are_readable(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    log = EventLog(path)
    first = log.append("motion_start", 100.0, score=0.2)
    second = log.append("motion_end", 101.0)
    assert (first["seq"], second["seq"]) == (1, 2)
    # Held, not yet flushed: still visible to readers.
    assert [e["seq"] for e in log.since(0, 10)] == [1, 2]
    log.flush(102.0)
    log.append("detection", 103.0, label="face")  # held at close: close flushes it
    log.close(104.0)

    reopened = EventLog(path)
    events = reopened.since(0, 10)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0] == {"class": "event", "seq": 1, "ts": 100.0, "kind": "motion_start",
                         "score": 0.2}
    assert reopened.append("profile_change", 105.0)["seq"] == 4
    assert [e["seq"] for e in reopened.since(2, 10)] == [3, 4]
    assert [e["seq"] for e in reopened.since(0, 2)] == [1, 2]


def test_pruning_by_count_and_age_never_reuses_seq(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.db"), max_events=5, max_age_s=50.0)
    for i in range(12):
        log.append("motion_start", float(i))
    log.flush(20.0)
    assert [e["seq"] for e in log.since(0, 100)] == [8, 9, 10, 11, 12]
    log.flush(60.0)  # everything older than ts 10 goes
    assert [e["seq"] for e in log.since(0, 100)] == [11, 12]
    log.close(60.0)
    reopened = EventLog(str(tmp_path / "events.db"))
    assert reopened.append("x", 61.0)["seq"] == 13
    assert reopened.oldest_seq() == 11
