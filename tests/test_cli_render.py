"""What `wattgate status`, `watch` and `events` print for people (the --json output is
tested with the protocol).

The daemon's strings come from files others write (a model's labels file, the rule names
in a drop-in) and from the camera's errors: printed to an operator's terminal as they
are, an escape sequence in a label cleared or recoloured the screen. Labels in other
scripts than Latin were printed as \\u escapes in events.
"""

from __future__ import annotations

from typing import Any

from wattgate.cli import format_event, format_message, format_status
from wattgate.cli_power import format_power

RESULT: dict[str, Any] = {
    "class": "result", "seq": 7, "frame": 12, "reason": "motion", "latency_ms": 3.2,
    "motion": {"score": 0.12},
    "detections": [{"label": "face\x1b[2J\x1b[31mRED", "score": 0.81, "box": [1, 2, 3, 4]}],
}


def test_a_results_control_characters_are_shown_escaped() -> None:
    line = format_message(RESULT)
    assert "\x1b" not in line
    assert "face\\x1b[2J\\x1b[31mRED 0.81 [1, 2, 3, 4]" in line


def test_an_events_labels_read_as_written_and_control_characters_escaped() -> None:
    line = format_event({"class": "event", "seq": 3, "ts": 0.0, "kind": "detection",
                         "labels": ["顔", "a\nb\x9b"]})
    assert 'labels=["顔", "a\\nb\\x9b"]' in line, line
    assert "\n" not in line and "\x9b" not in line


def test_status_says_why_the_camera_is_not_running_and_when_it_is_tried_again() -> None:
    text = format_status({
        "version": "1", "uptime_s": 5, "clients": 1,
        "source": {"description": "/dev/video99 (not open)", "state": "waiting",
                   "reason": "no such device: /dev/video99", "retry_in_s": 3.6},
    })
    assert ("source    /dev/video99 (not open) (waiting): no such device: /dev/video99, "
            "retry in 4 s") in text.splitlines()


def test_the_energy_line_says_what_each_figure_covers() -> None:
    """`measured` covers only the seconds a meter was read (a battery is one only while the
    board runs on it): shown alone as "since start", it dropped the hours on mains."""
    power = {"watts": {"value": 7.31, "meter": "battery BAT0"},
             "joules": {"measured": 22.087, "estimated": 31.465}}
    line = next(line for line in format_power(power) if line.startswith("power"))
    assert line == ("power     7.31 W (battery BAT0), 31.5 J since start (estimate), "
                    "22.1 J metered")
