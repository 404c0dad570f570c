"""Every motion_start gets its motion_end, also when the daemon stops watching mid-episode.

The gate ends an episode only on a frame that comes gate.cooldown_s after the last moving
one. A source that ends, a camera that is lost, a reload that opens a new camera and a
daemon that stops bring no such frame: the episode stayed open, in the event log for good.

Real daemons reading real video files. No camera can be unplugged here, so the lost
camera is a recording cut short (its header counts more frames than it holds): the
supervisor reports it lost, as it does a camera that stops giving frames.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from tests.conftest import DaemonProcess, write_config
from tests.test_daemon import settled, wait_status
from wattgate.client import Client
from wattgate.daemon.eventlog import EventLog

StartDaemon = Callable[..., DaemonProcess]
FPS = 15.0
STILL = 40  # frames: the gate's 2 s calibration sees a still scene
MOTION = ("motion_start", "motion_end")


def write_scene(path: Path, moving: int, still: int = STILL) -> Path:
    """A still room for `still` frames, then a dark square crossing it for `moving`."""
    rng = np.random.default_rng(5)
    room = cv2.resize(rng.uniform(70, 170, (12, 16, 3)).astype(np.uint8), (640, 480),
                      interpolation=cv2.INTER_NEAREST)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (640, 480))
    assert writer.isOpened()
    for i in range(still + moving):
        frame = room.copy()
        if i >= still:
            x = 40 + (4 * (i - still)) % 520
            frame[300:360, x:x + 60] = 20
        writer.write(frame)
    writer.release()
    return path


def motion_kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events if e["kind"] in MOTION]


def events_of(client: Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.request("events", since=0, limit=1000)["events"]
    return events


def wait_events(client: Client, done: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 30.0) -> list[dict[str, Any]]:
    """The event log once `done` holds for it (or the hang guard ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        events = events_of(client)
        if done(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def started_moving(events: list[dict[str, Any]]) -> bool:
    return "motion_start" in motion_kinds(events)


def assert_one_closed_episode(events: list[dict[str, Any]]) -> None:
    assert motion_kinds(events) == ["motion_start", "motion_end"], events
    start, end = (e for e in events if e["kind"] in MOTION)
    assert start["ts"] <= end["ts"], events


def test_a_source_that_ends_mid_motion_ends_the_episode(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The file ends while the square still moves, well within the cooldown. The end is
    told by a last camera_lost (`ended`), after the episode's end, as a loss is."""
    path = write_scene(tmp_path / "ends_moving.avi", moving=30)
    daemon = start_daemon(camera={"source": str(path), "realtime": False},
                          gate={"cooldown_s": 5.0})
    with daemon.connect() as client:
        wait_status(client, lambda s: s["source"]["state"] == "ended" and settled(s))
        events = wait_events(client, lambda ev: "camera_lost" in [e["kind"] for e in ev],
                             timeout=5.0)
    assert_one_closed_episode(events)
    kinds = [e["kind"] for e in events if e["kind"] in (*MOTION, "camera_lost", "camera_back")]
    assert kinds == ["motion_start", "motion_end", "camera_lost"], events
    end = events[-1]
    assert (end["kind"], end["reason"], end["ended"]) == ("camera_lost", "end of file", True)
    assert max(e["ts"] for e in events if e["kind"] in MOTION) <= end["ts"]
    assert daemon.stop() == 0


def test_a_camera_lost_mid_motion_ends_the_episode_before_camera_lost(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The recording stops (cut short) while the square moves; the supervisor reports the
    camera lost and keeps it so for stall_s. The episode ends at the loss, not when (if
    ever) frames come back."""
    whole = write_scene(tmp_path / "whole.avi", moving=80).read_bytes()
    path = tmp_path / "camera.avi"
    path.write_bytes(whole[: len(whole) * 4 // 5])  # cut among the moving frames
    daemon = start_daemon(
        camera={"source": str(path), "realtime": False, "format": "mjpeg", "stall_s": 60.0},
        gate={"cooldown_s": 5.0},
    )
    with daemon.connect() as client:
        events = wait_events(client, lambda ev: "camera_lost" in [e["kind"] for e in ev])
        assert client.request("status")["source"]["state"] == "lost"
    kinds = [e["kind"] for e in events if e["kind"] in (*MOTION, "camera_lost")]
    assert kinds == ["motion_start", "motion_end", "camera_lost"], events
    assert_one_closed_episode(events)
    lost = next(e for e in events if e["kind"] == "camera_lost")
    assert max(e["ts"] for e in events if e["kind"] in MOTION) <= lost["ts"]
    assert daemon.stop() == 0


def test_a_reload_to_a_new_camera_mid_motion_ends_the_episode_once(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The old pipeline is stopped mid-episode and the new one starts with none: its
    motion_end comes from the old one, once, and the daemon's stop adds none."""
    still = write_scene(tmp_path / "still.avi", moving=0, still=300)
    run, config, daemon = moving_daemon(start_daemon, tmp_path)
    with daemon.connect() as client:
        wait_events(client, started_moving)
        write_config(config, run, camera={"source": str(still)}, gate={"cooldown_s": 5.0})
        assert client.request("reload")["reloaded"]  # answered once the old pipeline stopped
        assert_one_closed_episode(events_of(client))
    stopped_with_one_closed_episode(daemon, run)


def test_a_daemon_stopped_mid_motion_logs_the_episodes_end(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Clients are gone at a stop, but the event log keeps what they will ask for later."""
    run, _, daemon = moving_daemon(start_daemon, tmp_path)
    with daemon.connect() as client:
        assert motion_kinds(wait_events(client, started_moving)) == ["motion_start"]
    stopped_with_one_closed_episode(daemon, run)


def moving_daemon(
    start_daemon: StartDaemon, tmp_path: Path
) -> tuple[Path, Path, DaemonProcess]:
    """A daemon (its run directory and config) playing 40 s of motion in real time."""
    moving = write_scene(tmp_path / "moving.avi", moving=600)
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(run / "config.toml", run, camera={"source": str(moving)},
                          gate={"cooldown_s": 5.0})
    return run, config, start_daemon(config=config)


def stopped_with_one_closed_episode(daemon: DaemonProcess, run: Path) -> None:
    """Stop the daemon; its event log then holds one motion episode, closed."""
    assert daemon.stop() == 0
    log = EventLog(str(run / "state" / "events.db"))
    try:
        assert_one_closed_episode(log.since(0, 1000))
    finally:
        log.close(time.time())
