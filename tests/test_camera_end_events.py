"""What clients are told when a source that was lost ends instead of coming back.

A recording a power cut left unfinished (its header counts more frames than it holds) is
reported lost (`camera_lost`, "file cut short at frame N") and reopened; once it has stayed
so for camera.stall_s it ends, as a whole file ends. Clients told camera_lost wait for
camera_back, which never comes: they were told nothing more, and believed the camera was
still lost and being retried. The end closes the loss with a last `camera_lost` that says
the source ended (`ended`: true).

A real daemon reading a real AVI written by cv2.VideoWriter and cut in two, through its
real socket.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from tests.conftest import DaemonProcess
from tests.test_camera_watch import FAST, file_config, write_video
from tests.test_daemon import wait_status
from wattgate.client import Client
from wattgate.daemon.camera_watch import SupervisedSource

StartDaemon = Callable[..., DaemonProcess]
CAMERA = ("camera_lost", "camera_back")


def camera_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] in CAMERA]


def subscribed_until_ended(client: Client, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The camera events a subscriber gets, until one says the source ended (or the hang
    guard runs out)."""
    client.request("subscribe", topics=["events"])
    client.settimeout(timeout)
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    for message in client.messages():
        if message.get("class") == "event" and message["kind"] in CAMERA:
            seen.append(message)
            if message.get("ended") or time.monotonic() > deadline:
                return seen
    raise AssertionError("the events stream ended")


def test_a_file_cut_short_that_ends_tells_clients_it_ended(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Paced at its 30 fps, the file's half plays for a second, then it is lost; a second
    later (stall_s), unchanged, it ends. Live and in the log, the loss is followed by a
    camera_lost that says the source ended and why, and no camera_back; the daemon goes on
    serving, its status saying the source ended."""
    whole = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    path = tmp_path / "camera.avi"
    path.write_bytes(whole[: len(whole) // 2])
    daemon = start_daemon(
        camera={"source": str(path), "realtime": True, "format": "mjpeg", "stall_s": 1.0},
        gate={"enabled": False},
    )
    with daemon.connect() as subscriber, daemon.connect() as client:
        live = subscribed_until_ended(subscriber)
        status = wait_status(client, lambda s: s["source"]["state"] == "ended")
        logged = camera_events(client.request("events", since=0, limit=1000)["events"])
    assert status["source"]["reason"] == "end of file"
    assert [e["kind"] for e in logged] == ["camera_lost", "camera_lost"], logged
    cut, end = logged
    assert "cut short" in cut["reason"] and "ended" not in cut
    assert end["ended"] is True
    assert end["reason"].startswith("end of file: it stops at frame "), end
    assert "60 its header counts" in end["reason"], end
    assert live[-1] == end  # the subscriber got it live, as the log keeps it
    assert live == logged[-len(live):]  # and nothing else about the camera
    assert daemon.stop() == 0


def test_a_loss_closed_by_an_end_is_closed_once_and_a_new_loss_is_told_across_reloads(
    tmp_path: Path,
) -> None:
    """A reload after the closing camera_lost hands the loss to the next source: ending
    too, it closed the loss a second time; unable to open, it announced nothing, so clients
    told "ended" were not told the daemon was waiting and retrying again."""
    seen: list[tuple[Any, ...]] = []

    def supervised(path: Path) -> SupervisedSource:
        return SupervisedSource(
            file_config(path, stall_s=0.3), on_lost=lambda r: seen.append(("lost", r)),
            on_back=lambda: seen.append(("back",)),
            on_ended=lambda r: seen.append(("ended", r)),
            settings=FAST, udev=False,
        )

    def played(source: SupervisedSource,
               previous: Optional[SupervisedSource] = None) -> SupervisedSource:
        if previous is not None:
            source.take_over_loss(previous)  # as a reload to new camera settings does
        while source.read() is not None:
            pass
        source.stop()
        return source

    whole = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    first = played(supervised(cut))
    assert [e[0] for e in seen] == ["lost", "ended"] and "stops at frame" in seen[-1][1]
    empty = played(supervised(write_video(tmp_path / "empty.avi", frames=0)), first)
    assert seen[2:] == []  # told already: once is enough
    waiting = supervised(tmp_path / "not-there-yet.avi")
    waiting.take_over_loss(empty)
    reader = threading.Thread(target=waiting.read)  # blocks while the file is not there
    reader.start()
    deadline = time.monotonic() + 10.0
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting.stop()
    reader.join(timeout=10.0)
    assert [e[0] for e in seen[2:]] == ["lost"]  # waiting and retrying again: said so
    assert "not-there-yet.avi" in seen[2][1]
