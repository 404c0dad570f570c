"""An event is bounded when it is logged: what the log stores is what subscribers were sent.

The log kept every event whole, however long its fields: a `camera_lost` reason or an
error's message is a driver's or GStreamer's text, of no bounded length, so one event
could take any amount of flash, and what `events since` returned after a restart (cut to
fit the answer) was not what had been sent live (cut to fit a line). Real SQLite files in
tmp_path, real sockets, the real daemon.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.test_protocol_doc import lines_sent
from wattgate.daemon.eventlog import EVENT_MAX_LINE, TEXT_MAX, EventLog
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
