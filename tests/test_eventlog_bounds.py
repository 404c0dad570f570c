"""An event is bounded when it is logged: what the log stores is what subscribers were sent.
The log as a whole is bounded by bytes as well as by count and age.

The log kept every event whole, however long its fields: a `camera_lost` reason or an
error's message is a driver's or GStreamer's text, of no bounded length, so one event
could take any amount of flash, and what `events since` returned after a restart (cut to
fit the answer) was not what had been sent live (cut to fit a line). Bounded at about
60 KiB each, 100 000 events could still take gigabytes of a board's eMMC. Real SQLite
files in tmp_path, real sockets, the real daemon.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.test_eventlog import _locked
from tests.test_protocol_doc import lines_sent
from wattgate.daemon.eventlog import (
    EVENT_MAX_LINE,
    ROW_BYTES_SQL,
    TEXT_MAX,
    WAL_MAX_BYTES,
    EventLog,
)
from wattgate.daemon.hub import MAX_LINE, encode

StartDaemon = Callable[..., DaemonProcess]
PAGE = " ".join((Path(__file__).resolve().parent.parent / "docs" / "protocol.md")
                .read_text().split())
GST_ERROR = ("gst-resource-error-quark: Could not read from resource. (9): "
             "../sys/v4l2/gstv4l2bufferpool.c(1040): gst_v4l2_buffer_pool_poll (): ")


def stored(path: Path, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a log as a restarted daemon reads them: flushed, closed and opened
    again from the file."""
    log = EventLog(str(path))
    live = log.append(event.pop("kind"), event.pop("ts"), **event)
    assert log.flush(10.0) is True
    log.close(11.0)
    reopened = EventLog(str(path))
    try:
        events = reopened.since(0, 10)
    finally:
        reopened.close(12.0)
    assert events == [live]  # what was sent live is what is read back
    return events


def test_a_huge_camera_lost_reason_is_stored_cut_and_says_so(tmp_path: Path) -> None:
    reason = GST_ERROR + "x" * 200_000
    [event] = stored(tmp_path / "events.db", {"kind": "camera_lost", "ts": 1.5,
                                              "reason": reason})
    assert len(encode(event)) <= MAX_LINE
    assert event["truncated"] == ["reason"]
    assert event["reason"].startswith(GST_ERROR) and event["reason"].endswith("…")
    assert len(event["reason"]) < len(reason)
    assert (event["seq"], event["ts"], event["kind"]) == (1, 1.5, "camera_lost")


def test_a_huge_error_event_keeps_within_a_line_and_names_what_was_cut(
    tmp_path: Path,
) -> None:
    """Long fields that are not text (lists of it) are still over a line together: the
    largest go whole, named in `omitted`, as the hub would have left them out; the message
    is cut to its head."""
    details = {f"detail{i:02}": ["d" * 2000] * 3 for i in range(20)}
    [event] = stored(tmp_path / "events.db", {"kind": "error", "ts": 2.0,
                                              "message": "m" * 100_000, **details})
    assert len(encode(event)) <= MAX_LINE
    assert event["truncated"] == ["message"] and event["message"] == "m" * TEXT_MAX + "…"
    omitted = event["omitted"]
    kept = set(event) - {"class", "seq", "ts", "kind", "message", "omitted", "truncated"}
    assert omitted and not set(omitted) & kept
    assert set(omitted) | kept == set(details)  # each field is there or named


def test_a_cut_text_left_out_after_all_is_named_only_in_omitted(tmp_path: Path) -> None:
    """A message cut to 4096 characters of two bytes each is still the largest field: it
    goes, and `truncated` does not name a field that is not there."""
    details = {f"detail{i:02}": "d" * 3000 for i in range(40)}
    [event] = stored(tmp_path / "events.db", {"kind": "error", "ts": 2.0,
                                              "message": "é" * 100_000, **details})
    assert len(encode(event)) <= MAX_LINE
    assert "message" in event["omitted"] and "message" not in event
    assert "truncated" not in event


def test_normal_events_are_stored_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = EventLog(str(path))
    made = [
        log.append("camera_lost", 1.0, reason="r" * TEXT_MAX),
        log.append("detection", 2.0, labels=["face"], frame=3, result_seq=4, score=0.9),
        log.append("knob_failed", 3.0, knob="cpu_max_khz", value=1, error="EINVAL"),
    ]
    log.close(4.0)
    reopened = EventLog(str(path))
    assert reopened.since(0, 10) == made
    reopened.close(5.0)
    assert made[0] == {"class": "event", "seq": 1, "ts": 1.0, "kind": "camera_lost",
                       "reason": "r" * TEXT_MAX}
    assert all("truncated" not in e and "omitted" not in e for e in made)


def sent_live(event: dict[str, Any]) -> dict[str, Any]:
    """event as the hub sends it to an events subscriber over a real socket pair."""
    (line,) = lines_sent([event])
    assert len(line) <= MAX_LINE
    message: dict[str, Any] = json.loads(line)
    return message


def test_an_event_sent_live_is_what_events_since_returns_after_a_restart(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """A reason that leaves its event just inside a line was sent whole live, but did not
    fit an `events` answer beside the answer's own fields: after a restart the client got
    it with `omitted`, another event than the one it had been sent."""
    state = tmp_path / "state"
    log = EventLog(str(state / "events.db"))
    head = len(encode({"class": "event", "seq": 1, "ts": 7.25, "kind": "camera_lost",
                       "reason": ""}))
    event = log.append("camera_lost", 7.25, reason="x" * (MAX_LINE - head - 10))
    live = sent_live(event)
    log.close(8.0)
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          daemon={"state_dir": str(state)})
    with daemon.connect() as client:
        answer = client.request("events", since=0, limit=1)
    assert daemon.stop() == 0
    assert answer["events"] == [live]


def test_the_bounds_are_the_ones_docs_protocol_md_gives() -> None:
    assert f"A text field over {TEXT_MAX} characters" in PAGE
    assert f"An event still over {EVENT_MAX_LINE} bytes as a line" in PAGE


def _append_real(log: EventLog, i: int) -> dict[str, Any]:
    """One of the events a daemon logs, the largest kinds among them: a detection, a
    camera_lost with GStreamer's text, an error whose fields fill its line (~60 KiB)."""
    if i % 3 == 0:
        return log.append("detection", float(i), labels=["face", "person"], frame=i,
                          result_seq=i, score=0.9)
    if i % 3 == 1:
        return log.append("camera_lost", float(i), reason=GST_ERROR + "x" * 10_000)
    details = {f"detail{j:02}": ["d" * 2000] * 3 for j in range(20)}
    return log.append("error", float(i), message="m" * 100_000, **details)


def _stored_bytes(path: Path) -> int:
    """The bytes of the events in the file, as the bound counts them."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT TOTAL({ROW_BYTES_SQL}) FROM events").fetchone()[0])
    finally:
        db.close()


def test_the_files_stay_within_the_byte_bound_after_writing_ten_times_as_much(
    tmp_path: Path,
) -> None:
    """SQLite does not make the file smaller when rows go: the pages freed are reused.
    With the events' bytes bounded, events.db stays within the bound and a sixteenth (a
    part-filled last page of each large event, b-tree pages not full), and its -wal within
    WAL_MAX_BYTES and twice what one flush writes (frames of the b-tree pages above them)."""
    path = tmp_path / "events.db"
    wal = tmp_path / "events.db-wal"
    bound = 2 << 20
    log = EventLog(str(path), max_bytes=bound)
    written = largest_db = largest_wal = 0
    i = 0
    while written < 10 * bound:
        flushed = 0
        for _ in range(6):  # a busy second: two of each
            i += 1
            flushed += len(encode(_append_real(log, i)))
        assert log.flush(float(i)) is True
        written += flushed
        largest_db = max(largest_db, path.stat().st_size)
        largest_wal = max(largest_wal, wal.stat().st_size)
        assert largest_wal <= WAL_MAX_BYTES + 2 * flushed, largest_wal
    assert largest_db <= bound + bound // 16, largest_db
    assert bound - EVENT_MAX_LINE < _stored_bytes(path) <= bound
    oldest = log.oldest_seq()
    assert 1 < oldest < i  # a client that asks since 0 sees the oldest were pruned
    assert [e["seq"] for e in log.since(0, 1000)] == list(range(oldest, i + 1))
    log.close(float(i))
    reopened = EventLog(str(path), max_bytes=bound)
    assert reopened.oldest_seq() == oldest
    _append_real(reopened, i + 2)  # the total read at open goes on: the bound still holds
    assert reopened.flush(float(i + 2)) is True
    assert _stored_bytes(path) <= bound
    reopened.close(float(i + 2))


def test_a_daemon_prunes_by_bytes_and_oldest_seq_says_so(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """daemon.events_max_bytes is taken, and an `events` answer's oldest_seq moves up past
    the events it pruned, so a client asking since one of them can tell."""
    state = tmp_path / "state"
    log = EventLog(str(state / "events.db"), max_bytes=64 << 20)
    last = 0
    while _stored_bytes(state / "events.db") < 3 << 20:
        last = _append_real(log, last + 1)["seq"]
        assert log.flush(float(last)) is True
    log.close(float(last))
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          daemon={"state_dir": str(state), "events_max_bytes": 1 << 20})
    with daemon.connect() as client:
        for _ in range(300):  # the first flush prunes, about a second after the start
            answer = client.request("events", since=1, limit=1)
            if answer["oldest_seq"] > 2:
                break
            time.sleep(0.1)
    assert daemon.stop() == 0
    assert answer["last_seq"] == last
    assert 2 < answer["oldest_seq"] <= last
    assert answer["events"][0]["seq"] == answer["oldest_seq"]
    assert (1 << 20) - EVENT_MAX_LINE < _stored_bytes(state / "events.db") <= 1 << 20


def test_events_held_while_writes_fail_stay_within_the_byte_bound(tmp_path: Path) -> None:
    """Held in memory until the disk takes them, up to daemon.events_max of them: 100 000
    events of 60 KiB were 6 GB of a board's RAM."""
    path = tmp_path / "events.db"
    bound = 1 << 20
    log = EventLog(str(path), max_bytes=bound)
    other = _locked(str(path))
    for i in range(1, 41):
        _append_real(log, 3 * i + 2)  # the errors of ~60 KiB
        assert log.flush(float(i)) is False
    held = log.since(0, 1000)
    # Counted as memory (tests/test_eventlog_held_memory.py), each holds its text twice:
    # in its values and in the body it is stored as.
    assert bound // 3 < sum(len(encode(e)) for e in held) <= bound // 2
    assert log.oldest_seq() == held[0]["seq"] > 1
    other.execute("ROLLBACK")
    other.close()
    assert log.flush(50.0) is True
    assert _stored_bytes(path) <= bound
    assert [e["seq"] for e in log.since(0, 1000)] == [e["seq"] for e in held]
    log.close(51.0)


def test_a_flush_at_the_byte_bound_reads_only_the_events_that_go(tmp_path: Path) -> None:
    """The events' bytes are kept as a running total: a flush at the bound reads the few
    oldest events it drops, not the table. Counted in SQLite's VM steps, not in time."""
    log = EventLog(str(tmp_path / "events.db"), max_bytes=1 << 20)
    for i in range(20_000):
        log.append("motion_start", float(i), score=0.5)
    assert log.flush(20_000.0) is True
    kept = len(log.since(0, 100_000))
    assert 5_000 < kept < 20_000
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 100
        return 0

    log.append("motion_end", 20_001.0, score=0.5)
    log._db.set_progress_handler(count, 100)
    assert log.flush(20_001.0) is True
    log._db.set_progress_handler(None, 0)
    assert steps < kept // 2  # reading the kept events takes several steps each
    assert len(log.since(0, 100_000)) <= kept
    log.close(20_002.0)
