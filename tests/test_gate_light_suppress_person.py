"""Someone walks in and switches the light on, then walks on: one presence, one episode.

The light sensor sees the change and the daemon does what it does for one
(app._relearn_lighting): suppress_motion for sensors.light_suppress_s and
request_recalibration. Inside that window every frame the gate found moving reset the gate,
and each reset began a calibration that learnt whatever moved as scenery: the person was
learnt along their path, motion was lost for seconds after the window, and one continuous
presence became several motion episodes.

A real pipeline, gate and model, on a stand-in live source of numpy frames whose capture
times are made up (15 fps), so the window covers the same frames on any machine.
"""

from __future__ import annotations

import threading
from typing import Optional

import cv2
import numpy as np

from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Pipeline
from wattgate.drivers.camera import Frame
from wattgate.drivers.inference import Model
from wattgate.policies.gating import MotionGate

HANG_S = 120.0  # a hang guard, never a measure of time
WIDTH, HEIGHT, FPS = 640, 480, 15.0
LIGHT_ON_S = 4.0  # the light comes on and the person starts walking
SENSOR_FRAME = 68  # the light sensor's poll that sees it (4.53 s)
SUPPRESS_S = 3.0  # sensors.light_suppress_s
LENGTH = int(20 * FPS)
T0 = 1000.0  # monotonic time of the first frame
TS0 = 1e9  # its wall-clock time


class LightOnWalkIn:
    """A dim room; at LIGHT_ON_S the light comes on and a person walks to and fro in it for
    good. At SENSOR_FRAME, before that frame is gated, the light sensor reports."""

    width, height, fps, paced, live = WIDTH, HEIGHT, FPS, False, True
    description = "a stand-in room where the light comes on as someone walks in"

    def __init__(self) -> None:
        self.index = 0
        self.ended = threading.Event()
        self.pipeline: Optional[Pipeline] = None
        self.rng = np.random.default_rng(2)
        coarse = self.rng.uniform(70, 170, (12, 16, 3)).astype(np.float32)
        self.room = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)

    def read(self) -> Optional[Frame]:
        i = self.index
        if i >= LENGTH:
            self.ended.set()
            return None
        t = i / FPS
        if i == SENSOR_FRAME:
            assert self.pipeline is not None
            self.pipeline.suppress_motion(T0 + t + SUPPRESS_S)
            self.pipeline.request_recalibration()
        picture = self.room * (1.0 if t >= LIGHT_ON_S else 0.25)
        if t >= LIGHT_ON_S:  # back and forth over the same 200 pixels, 80 pixels a second
            phase = ((t - LIGHT_ON_S) * 80) % 400
            x = 100 + int(phase if phase < 200 else 400 - phase)
            picture[200:320, x:x + 40] = 25
        noisy = picture + self.rng.normal(0, 3, picture.shape)
        self.index += 1
        return Frame(i, TS0 + t, T0 + t, np.clip(noisy, 0, 255).astype(np.uint8))

    def close(self) -> None:
        pass


def test_the_person_who_switched_the_light_on_is_one_episode_after_the_window() -> None:
    source = LightOnWalkIn()
    events: list[tuple[str, float]] = []
    pipeline = Pipeline(source, MotionGate(GateConfig()), Model.load(None),
                        on_result=lambda _: None,
                        on_motion=lambda moving, ts: events.append(
                            ("start" if moving else "end", ts - TS0)))
    source.pipeline = pipeline
    pipeline.start()
    try:
        assert source.ended.wait(HANG_S)
    finally:
        pipeline.stop()
    window_end = SENSOR_FRAME / FPS + SUPPRESS_S
    after = [(kind, round(t, 2)) for kind, t in events if t >= window_end]
    # Seen again right after the window, and seen until the source ended.
    assert [kind for kind, _ in after] == ["start", "end"], events
    assert after[0][1] <= window_end + 0.5, events
    assert after[1][1] >= (LENGTH - 1) / FPS, events
