"""sensors.light_suppress_s: seconds motion is ignored after a lighting change the light
sensor saw. The key was read and documented, but nothing used it: motion counted again as
soon as the gate's own calibration (2 s) ended, whatever it was set to.

A real pipeline and gate on a stand-in source of numpy frames (read faster than real time,
on media time): a grey scene, then a square moving across it, as a lamp's shadow or glare
would look to the gate after a lighting change.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import numpy as np

from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Pipeline
from wattgate.drivers.camera import Frame
from wattgate.drivers.inference import Model
from wattgate.policies.gating import MotionGate

HANG_S = 60.0  # a hang guard, never a measure of time
WIDTH, HEIGHT, FPS = 160, 120, 30.0
STILL, MOVING = 120, 60  # frames: 4 s of grey scene, then 2 s of a moving square


class MovingSquare:
    """STILL grey frames, then MOVING frames with a bright square crossing, then the end."""

    width, height, fps, paced, live = WIDTH, HEIGHT, FPS, False, False
    description = "a stand-in scene with a moving square"

    def __init__(self) -> None:
        self.index = 0
        self.ended = threading.Event()

    def read(self) -> Optional[Frame]:
        if self.index >= STILL + MOVING:
            self.ended.set()
            return None
        picture = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        if self.index >= STILL:
            x = 4 * (self.index - STILL)
            picture[40:80, x:x + 40] = 250
        self.index += 1
        return Frame(self.index, time.time(), time.monotonic(), picture)

    def close(self) -> None:
        pass


def motion_starts(suppress_s: float) -> list[Any]:
    source = MovingSquare()
    starts: list[Any] = []
    pipeline = Pipeline(source, MotionGate(GateConfig()), Model.load(None),
                        on_result=lambda _: None,
                        on_motion=lambda moving, ts: starts.append(ts) if moving else None)
    if suppress_s:
        pipeline.suppress_motion(time.monotonic() + suppress_s)
    pipeline.start()
    try:
        assert source.ended.wait(HANG_S)
    finally:
        pipeline.stop()
    return starts


def test_motion_within_light_suppress_s_of_a_lighting_change_is_ignored() -> None:
    assert motion_starts(0.0), "the square is motion when nothing suppresses it"
    # The whole scene is read within the suppression (it is read far faster than 600 s).
    assert motion_starts(600.0) == []
