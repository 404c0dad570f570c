"""A pin's profile_change is an event like any other: numbered, logged and kept, even when
the daemon stops right after it.

The pin's event waited in the power controller for the next once-a-second tick; a SIGTERM
before that tick (a script that pins, then restarts the service) lost it: the event log
never showed the pin, though docs/protocol.md says every pin and release is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess, pinnable_board

StartDaemon = Callable[..., DaemonProcess]


def test_a_pin_just_before_a_stop_is_in_the_event_log(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    daemon = start_daemon(config=config)
    with daemon.connect() as client:
        client.request("profile", set="performance")
    assert daemon.stop() == 0
    again = start_daemon(config=config)
    with again.connect() as client:
        events = client.request("events", since=0, limit=1000)["events"]
    pins = [e for e in events if e["kind"] == "profile_change" and e["profile"] == "performance"]
    assert pins and "pinned by" in pins[0]["reason"], events
    assert again.stop() == 0
