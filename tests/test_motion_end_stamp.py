"""motion_end is stamped cooldown_s after the episode's last moving frame, as
docs/protocol.md says, not by the frame that finds the cooldown over.

At the 1 fps of a power-saving capture rate that frame comes up to a second later: the
end was stamped up to a second late. The real Pipeline, MotionGate and bundled model on a
scripted camera (a plain object giving frames; nothing is mocked).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import pytest

from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Pipeline
from wattgate.drivers.camera import Frame
from wattgate.drivers.inference import Model
from wattgate.policies.gating import MotionGate

W, H = 320, 240
T0 = 1_000_000.0  # wall-clock time of frame 0


class SlowCamera:
    """A still room, then a bright block crossing it for `moving` frames, then still again;
    frame i at T0 + i * wall_step. Read as fast as the pipeline takes frames (neither live nor
    paced): the gate runs on media time, so its decisions do not depend on the load."""

    height, width, paced, live = H, W, False, False
    description = "slow scripted camera"

    def __init__(self, fps: float, still: int, moving: int, after: int,
                 wall_step: Optional[float] = None) -> None:
        """`wall_step`: seconds of wall clock between frames, 1 / fps by default; less for
        a file read faster than real time."""
        self.fps = fps
        self.wall_step = 1.0 / fps if wall_step is None else wall_step
        self.plan = ["still"] * still + ["move"] * moving + ["still"] * after
        self.index = 0
        self.room = np.random.default_rng(0).integers(60, 160, (H, W)).astype(np.uint8)

    def read(self) -> Optional[Frame]:
        i = self.index
        if i >= len(self.plan):
            return None
        self.index += 1
        luma = self.room.copy()
        if self.plan[i] == "move":
            x = 20 + 30 * (i % 8)
            luma[60:180, x:x + 40] = 240
        return Frame(i, T0 + i * self.wall_step, time.monotonic(), None, luma=luma,
                     decode=lambda: np.zeros((H, W, 3), np.uint8), size=(W, H))

    def close(self) -> None:
        pass


def episode(camera: SlowCamera, cooldown_s: float) -> tuple[list[tuple[bool, float]], float]:
    """The motion events of playing `camera` to its end, and the ts of its last moving frame."""
    events: list[tuple[bool, float]] = []
    pipeline = Pipeline(camera, MotionGate(GateConfig(cooldown_s=cooldown_s)),
                        Model.load(None), on_result=lambda r: None,
                        on_motion=lambda moving, ts: events.append((moving, ts)))
    pipeline.start()
    pipeline._threads[0].join(120.0)  # the capture thread ends with the camera's frames
    pipeline.stop()
    return events, pipeline._last_moving


@pytest.mark.parametrize("fps, cooldown_s", [(1.0, 0.5), (2.0, 1.2), (15.0, 1.0)])
def test_motion_end_is_cooldown_after_the_last_moving_frame(fps: float, cooldown_s: float
                                                           ) -> None:
    """Still for the gate's 2 s calibration and more, moving, then still until well past the
    cooldown: one episode, ended cooldown_s after its last moving frame."""
    still, moving = int(4 * fps), max(3, int(2 * fps))
    camera = SlowCamera(fps, still, moving, after=int(4 * fps) + 2)
    events, last_moving = episode(camera, cooldown_s)
    assert [moving for moving, _ in events] == [True, False], events
    assert last_moving >= T0 + (still + moving - 2) / fps  # seen moving to (nearly) its end
    assert events[1][1] == pytest.approx(last_moving + cooldown_s, abs=1e-6)


def test_motion_end_of_a_file_read_fast_is_within_its_frames() -> None:
    """A file read faster than real time: the gate counts media time (1 / fps a frame),
    the frames' stamps are wall-clock times 1 ms apart. The end, counted back on the gate's
    clock, would fall long before the last moving frame; it is stamped after it, by the
    frame that found the episode over at the latest."""
    fps, cooldown_s, wall_step = 1.0, 0.5, 0.001
    camera = SlowCamera(fps, still=4, moving=3, after=4, wall_step=wall_step)
    events, last_moving = episode(camera, cooldown_s)
    assert [moving for moving, _ in events] == [True, False], events
    assert last_moving <= events[1][1] <= last_moving + wall_step
