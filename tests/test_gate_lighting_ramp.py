"""The gate under supplied time that steps back.

The time the gate is fed may step back (a media clock restarted by a replaced file): its
timers must not be left waiting for a time that has already passed. Frames are synthetic and
times supplied, so all of it is exact.
"""

from __future__ import annotations

from wattgate.config import GateConfig
from wattgate.drivers.synthetic import make_scene
from wattgate.policies.gating import MotionGate

FPS = 15.0


def test_time_stepping_back_mid_scene_leaves_no_timer_stuck() -> None:
    scene = make_scene("person", 320, 240, FPS)
    gate = MotionGate(GateConfig())
    step_at = 60  # after the first event began, before the second
    verdicts = []
    for i in range(scene.length):
        t = i / FPS - (100.0 if i >= step_at else 0.0)
        verdicts.append(gate.update_bgr(scene.frame(i), t))
    (first, _), (second, _) = scene.events
    assert any(v.motion for v in verdicts[first : first + 2])
    assert any(v.motion for v in verdicts[second : second + 2]), [
        v.reason for v in verdicts[second : second + 4]
    ]
    quiet = [v.reason for v in verdicts[step_at:second]]
    assert "idle" in quiet, quiet  # the episode ended between the events
    assert not gate.in_motion
    assert verdicts[-1].reason == "idle"


def test_time_stepping_back_while_calibrating_still_ends_the_calibration() -> None:
    scene = make_scene("person", 320, 240, FPS)
    gate = MotionGate(GateConfig())
    verdicts = [gate.update_bgr(scene.frame(i), i / FPS - (100.0 if i >= 10 else 0.0))
                for i in range(scene.length)]
    first, _ = scene.events[0]
    assert verdicts[first - 1].reason == "idle", verdicts[first - 1].reason
    assert any(v.motion for v in verdicts[first : first + 2])
