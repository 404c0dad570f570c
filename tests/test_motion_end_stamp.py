"""motion_end is stamped cooldown_s after the episode's last moving frame, as
docs/protocol.md says, not by the frame that finds the cooldown over.

At the 1 fps of a power-saving capture rate that frame comes up to a second later: the
end was stamped up to a second late. The real Pipeline, MotionGate and bundled model on a
scripted camera (a plain object giving frames; nothing is mocked).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import pytest

from tests.test_gate_reload_episode import T0, ScriptedCamera
from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Pipeline
from wattgate.drivers.camera import Frame
from wattgate.drivers.inference import Model
from wattgate.policies.gating import MotionGate


class SlowCamera(ScriptedCamera):
    """ScriptedCamera's room and block at another rate: still, the block crossing for
    `moving` frames, then still again; frame i at T0 + i * wall_step. Read as fast as the
    pipeline takes frames (neither live nor paced): the gate runs on media time, 1 / fps a
    frame, so its decisions do not depend on the load."""

    def __init__(self, fps: float, still: int, moving: int, after: int,
                 wall_step: Optional[float] = None) -> None:
        """`wall_step`: seconds of wall clock between frames, 1 / fps by default; less for
        a file read faster than real time."""
        super().__init__(["still"] * still + ["move"] * moving + ["still"] * after)
        self.fps = fps
        self.wall_step = 1.0 / fps if wall_step is None else wall_step

    def read(self) -> Optional[Frame]:
        i = self.index
        frame = super().read()
        return None if frame is None else replace(frame, ts=T0 + i * self.wall_step)


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
