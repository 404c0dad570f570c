"""A camera URL's credential in its query string stays out of everything the daemon says.

Many IP cameras take their credential as a query parameter rather than as user:password@
(videostream.cgi?user=admin&pwd=..., ?token=..., ?access_token=...). The status and the
camera_lost event go to every client of the socket, the event is kept in the event log, and
the log goes to the journal: each showed the parameter's value as written in config.toml.

The camera here is a real HTTP URL to a port nothing listens on, so FFmpeg's open fails and
the daemon reports the camera as waiting, with its reason, as it would a camera that is down.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_camera_password import where_a_daemon_shows
from wattgate.drivers.camera import without_password

PASSWORD = "S3cretPW"
TOKEN = "T0kenXYZ"
URL = f"http://127.0.0.1:9/videostream.cgi?user=admin&pwd={PASSWORD}&token={TOKEN}"
SHOWN = "http://127.0.0.1:9/videostream.cgi?user=admin&pwd=***&token=***"


@pytest.mark.parametrize(("text", "shown"), [
    (URL, SHOWN),
    ("http://cam/mjpg/video.mjpg?token=abcd1234", "http://cam/mjpg/video.mjpg?token=***"),
    ("rtsp://cam:554/cam/realmonitor?channel=1&subtype=0&password=pw&user=admin",
     "rtsp://cam:554/cam/realmonitor?channel=1&subtype=0&password=***&user=admin"),
    # a # or a quote may be part of the value: the whole of it is hidden
    ("https://cam/api/stream?access_token=eyJhbGciOi#x", "https://cam/api/stream?access_token=***"),
    ("http://cam/stream?password=ab#cd&x=1", "http://cam/stream?password=***&x=1"),
    ("http://cam/stream?pwd=it's", "http://cam/stream?pwd=***"),
    ("http://cam/stream#access_token=abc", "http://cam/stream#access_token=***"),
    ("http://cam/snap.cgi?usr=admin&psw=s&passphrase=t&credential=u&authbasic=v",
     "http://cam/snap.cgi?usr=admin&psw=***&passphrase=***&credential=***&authbasic=***"),
    # one that begins a path segment ends with it: the file name stays
    ("/recordings/pass=2/clip.avi", "/recordings/pass=***/clip.avi"),
    ("rtspsrc location=rtsp://cam/s user-pw=a\\ b ! appsink",
     "rtspsrc location=rtsp://cam/s user-pw=*** ! appsink"),
    ("http://cam/s?passwd=a&auth=b&key=c&secret=d&signature=e&sig=f&apikey=g&api_key=h",
     "http://cam/s?passwd=***&auth=***&key=***&secret=***&signature=***&sig=***&apikey=***"
     "&api_key=***"),
    ("http://cam/s?PWD=a&X-Amz-Signature=b&client_secret=c",
     "http://cam/s?PWD=***&X-Amz-Signature=***&client_secret=***"),
    # the user name, and parameters that are no credential, stay as written
    ("http://cam/s?user=admin&channel=1&keyframe=2&monkey=3",
     "http://cam/s?user=admin&channel=1&keyframe=2&monkey=3"),
    ("http://cam/s?pwd=&user=a", "http://cam/s?pwd=&user=a"),  # an empty one hides nothing
    ('souphttpsrc location="http://cam/x.cgi?usr=a&pwd=pw1" ! jpegdec',
     'souphttpsrc location="http://cam/x.cgi?usr=a&pwd=***" ! jpegdec'),
    ("souphttpsrc location=http://cam/x?token=t1 ! jpegdec",
     "souphttpsrc location=http://cam/x?token=*** ! jpegdec"),
    ("rtspsrc location=rtsp://cam/s user-pw = secret ! appsink",
     "rtspsrc location=rtsp://cam/s user-pw = *** ! appsink"),
    ("rtspsrc location=rtsp://cam/s proxy-pw= 'a b' ! appsink",
     "rtspsrc location=rtsp://cam/s proxy-pw= *** ! appsink"),
    ("/dev/video0", "/dev/video0"),
])
def test_a_credential_in_the_query_is_hidden(text: str, shown: str) -> None:
    assert without_password(text) == shown


def test_status_events_and_log_do_not_show_a_query_credential(start_daemon: Any) -> None:
    source, events, log = where_a_daemon_shows(start_daemon, URL)
    assert source["source"] == SHOWN, source
    assert PASSWORD not in json.dumps(source) and TOKEN not in json.dumps(source), source
    assert "pwd=***" in events and PASSWORD not in events and TOKEN not in events, events
    assert "pwd=***&token=***" in log, log
    assert PASSWORD not in log and TOKEN not in log, log
