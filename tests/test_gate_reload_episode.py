"""A reload that changes only [gate] keys does not split the motion episode under way.

docs/protocol.md lists what ends an episode (its cooldown, a lost camera, an ended
source, a new camera, a stop); a gate-only reload is not on it. A reload used to swap in
a brand-new gate: the next frame ended the episode while the object still moved, and the
new gate's calibration learnt the moving object as scenery, blind to it for seconds.

Keys that leave what the gate has learnt valid (cooldown_s, threshold, ...) are applied
to the running gate; keys that change its small image (frame_height, blur_sigma) need a
new background, and the episode is carried through its calibration.

The real Pipeline, MotionGate and bundled model on a scripted camera (nothing is mocked:
the source is a plain object giving frames), and a real daemon playing a real video file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from tests.conftest import DaemonProcess, write_config
from tests.test_motion_episode_end import (
    events_of,
    motion_kinds,
    started_moving,
    wait_events,
    write_scene,
)
from wattgate.client import Client
from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Pipeline
from wattgate.drivers.camera import Frame
from wattgate.drivers.inference import Model
from wattgate.policies.gating import CALIBRATION_S, RETUNABLE, MotionGate

StartDaemon = Callable[..., DaemonProcess]
W, H, FPS = 320, 240, 15.0
T0 = 1_000_000.0  # wall-clock time of frame 0
STILL = 45  # frames: 3 s of an empty room, past the gate's 2 s calibration
MOVING = 180  # then 12 s of a block crossing it
RELOAD_AT = STILL + 30  # 2 s into the motion


class ScriptedCamera:
    """A still room, then a bright block crossing it, frame i at T0 + i / FPS.

    Read as fast as the pipeline takes frames (neither live nor paced): the gate runs on
    media time, 1 / FPS a frame, so what it decides does not depend on the machine's load.
    `before(i)` runs in the capture thread before frame i is given, between two frames."""

    width, height, fps, paced, live = W, H, FPS, False, False
    description = "scripted camera"

    def __init__(self, plan: list[str], before: Callable[[int], None] = lambda i: None) -> None:
        self.plan = plan
        self.before = before
        self.index = 0
        self.room = np.random.default_rng(0).integers(60, 160, (H, W)).astype(np.uint8)

    def read(self) -> Optional[Frame]:
        i = self.index
        if i >= len(self.plan):
            return None
        self.before(i)
        self.index += 1
        luma = self.room.copy()
        if self.plan[i] == "move":
            x = 20 + 6 * (i % 40)
            luma[60:180, x:x + 40] = 240
        elif self.plan[i] == "bad":  # an odd buffer: a two-channel plane the gate refuses
            luma = np.zeros((H, W, 2), np.uint8)
        return Frame(i, T0 + i / FPS, time.monotonic(), None, luma=luma,
                     decode=lambda: np.zeros((H, W, 3), np.uint8), size=(W, H))

    def close(self) -> None:
        pass


Event = tuple[bool, float, int]  # motion_start or _end, its ts, the frame being read then


def run_pipeline(plan: list[str], gate: MotionGate,
                 before: Callable[[Pipeline, int], None] = lambda p, i: None
                 ) -> tuple[Pipeline, list[Event]]:
    """Play the scripted camera to its end through a real pipeline; its motion events."""
    events: list[Event] = []
    holder: list[Pipeline] = []
    camera = ScriptedCamera(plan, lambda i: before(holder[0], i))
    pipeline = Pipeline(camera, gate, Model.load(None), on_result=lambda r: None,
                        on_motion=lambda moving, ts: events.append((moving, ts, camera.index)))
    holder.append(pipeline)
    pipeline.start()
    pipeline._threads[0].join(120.0)  # the capture thread ends with the camera's frames
    pipeline.stop()
    return pipeline, events


@pytest.mark.parametrize("changed", [
    {"cooldown_s": 3.0},
    {"heartbeat_s": 5.0},
    {"threshold": 28, "min_area": 12, "alpha": 0.02, "lighting_threshold": 0.7},
    {"frame_height": 120},
    {"blur_sigma": 2.0},
])
def test_a_gate_only_reload_mid_motion_keeps_the_episode(changed: dict[str, Any]) -> None:
    """The block moves from frame 45 to the end; the gate's settings change at frame 75.
    One episode, ended by the source's end, and the block is seen moving again after the
    reload (not learnt as scenery by a recalibration)."""
    plan = ["still"] * STILL + ["move"] * MOVING
    old = GateConfig(cooldown_s=2.0)
    new = old.model_copy(update=changed)

    def reload_mid_motion(pipeline: Pipeline, i: int) -> None:
        if i == RELOAD_AT:
            pipeline.replace_gate(new)

    gate = MotionGate(old)
    pipeline, events = run_pipeline(plan, gate, reload_mid_motion)
    assert [moving for moving, _, _ in events] == [True, False], events
    assert pipeline.gate.cfg == new
    assert (pipeline.gate is gate) == (changed.keys() <= RETUNABLE)  # retuned in place
    last_frame = STILL + MOVING - 1
    assert pipeline._last_moving >= T0 + (last_frame - FPS) / FPS  # seen in its last second


def test_a_reload_that_disables_the_gate_ends_the_episode_at_once() -> None:
    """A disabled gate sees no motion: the episode under way ends at the reload."""
    plan = ["still"] * STILL + ["move"] * MOVING
    old = GateConfig(cooldown_s=2.0)

    def disable(pipeline: Pipeline, i: int) -> None:
        if i == RELOAD_AT:
            pipeline.replace_gate(old.model_copy(update={"enabled": False}))

    _, events = run_pipeline(plan, MotionGate(old), disable)
    assert [(moving, read) for moving, _, read in events] == [
        (True, STILL + 1), (False, RELOAD_AT + 1)], events


def seen_moving(results: Client, after: float) -> dict[str, Any]:
    """The first result of a frame captured after `after` (Unix time) that the gate
    passed for motion, read from a client subscribed to results."""
    deadline = time.monotonic() + 30.0
    for message in results.messages():
        if (message["class"] == "result" and message["reason"] == "motion"
                and message["ts"] > after):
            return message
        assert time.monotonic() < deadline, "the block was not seen moving"
    raise AssertionError("unreachable: messages() does not end")


def test_a_daemon_reloaded_with_new_gate_keys_mid_motion_keeps_the_episode(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A real daemon plays 40 s of motion in real time; a reload changes the threshold,
    another the gate's frame_height (a new background). Neither ends the episode: the
    block is seen moving after each, the second time once the new gate has calibrated,
    and the episode that started before them is the only one."""
    moving = write_scene(tmp_path / "moving.avi", moving=600)
    run = tmp_path / "run"
    run.mkdir()
    camera = {"source": str(moving)}
    config = write_config(run / "config.toml", run, camera=camera, gate={"cooldown_s": 3.0})
    daemon = start_daemon(config=config)
    with daemon.connect() as client, daemon.connect() as results:
        results.request("subscribe", topics=["results"])
        wait_events(client, started_moving)
        write_config(config, run, camera=camera, gate={"cooldown_s": 3.0, "threshold": 28})
        assert client.request("reload")["reloaded"]
        seen_moving(results, after=time.time())  # by the retuned gate
        write_config(config, run, camera=camera,
                     gate={"cooldown_s": 3.0, "threshold": 28, "frame_height": 120})
        assert client.request("reload")["reloaded"]
        # by the new gate, past its calibration: the episode was carried through it
        seen_moving(results, after=time.time() + CALIBRATION_S)
        events = events_of(client)
        assert motion_kinds(events) == ["motion_start"], events
        assert client.request("status")["pipeline"]["frames"] > 0
    assert daemon.stop() == 0
