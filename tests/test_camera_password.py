"""A camera URL's password stays out of everything the daemon says of its camera.

IP cameras are opened by a URL with credentials (rtsp://admin:secret@host/stream, or a
GStreamer pipeline's rtspsrc location). The status and the camera_lost event go to every
client of the socket (the read-only group), the event is kept in the event log, and the
log goes to the journal: each showed the password as written in config.toml.

The camera here is a real RTSP URL to a port nothing listens on, so FFmpeg's open fails
and the daemon reports the camera as waiting, with its reason, as it would a camera that
is down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from wattgate.drivers.camera import without_password

SECRET = "s3cret-Pw"
URL = f"rtsp://admin:{SECRET}@127.0.0.1:9/stream"


@pytest.mark.parametrize(("text", "shown"), [
    (URL, "rtsp://admin:***@127.0.0.1:9/stream"),
    ("rtspsrc location=rtsp://u:p%40ss@cam.local/h264 latency=0 ! appsink",
     "rtspsrc location=rtsp://u:***@cam.local/h264 latency=0 ! appsink"),
    ("camera.source 'http://a:b@h/x.mjpg' and 'rtsp://c:d@h2/y'",
     "camera.source 'http://a:***@h/x.mjpg' and 'rtsp://c:***@h2/y'"),
    ("rtsp://admin:Adm1n@2024@192.168.1.64/Streaming/101",
     "rtsp://admin:***@192.168.1.64/Streaming/101"),  # an @ in the password
    ("rtspsrc location=rtsp://cam/h264 user-id=admin user-pw=Adm1n2024 ! appsink",
     "rtspsrc location=rtsp://cam/h264 user-id=admin user-pw=*** ! appsink"),
    ('souphttpsrc location=http://cam/x user-pw="a b" proxy-pw=p2 ! jpegdec',
     "souphttpsrc location=http://cam/x user-pw=*** proxy-pw=*** ! jpegdec"),
    ("rtsp://viewer@cam/stream", "rtsp://viewer@cam/stream"),  # no password to hide
    ("rtsp://cam:554/a@b", "rtsp://cam:554/a@b"),  # an @ in the path is no credential
    ("/dev/video0", "/dev/video0"),
])
def test_the_password_of_a_url_is_hidden(text: str, shown: str) -> None:
    assert without_password(text) == shown


def where_a_daemon_shows(start_daemon: Any, url: str) -> tuple[dict[str, Any], str, str]:
    """What a daemon whose camera.source is `url` (nobody listens there) shows of it: the
    status's source once it says why the camera is down, the events `wattgate events
    --json` prints, and the daemon's log after a stop."""
    daemon = start_daemon(camera={"source": url})
    with daemon.connect() as client:
        deadline = time.monotonic() + 30
        while "reason" not in (source := client.request("status")["source"]):
            assert time.monotonic() < deadline, source
            time.sleep(0.1)
    events = subprocess.run(
        [sys.executable, "-m", "wattgate.cli", "events", "--since", "0", "--json",
         "--socket", str(daemon.socket)],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert '"camera_lost"' in events, events
    assert daemon.stop() == 0, daemon.log()
    return source, events, daemon.log()


def test_status_events_and_log_do_not_show_the_cameras_password(start_daemon: Any) -> None:
    source, events, log = where_a_daemon_shows(start_daemon, URL)
    assert source["source"] == "rtsp://admin:***@127.0.0.1:9/stream", source
    assert SECRET not in json.dumps(source), source
    assert "admin:***@" in events and SECRET not in events, events
    assert "admin:***@" in log and SECRET not in log, log
