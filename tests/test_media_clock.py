"""The gate's clock on a source read faster than real time (camera.realtime = false) is
media time, and media time never goes back.

It was frames / fps of the source now: a file replaced by one of a higher frame rate (a
15 fps recording renamed over by a 30 fps one) halved the clock at once, and the gate,
whose timers then read negative, was stuck calibrating, every frame "cooldown", its motion
episode never ended. A stand-in source whose fps is changed stands in for the replaced
file; the pipeline and the gate are the real ones.
"""

from __future__ import annotations

from tests.test_infer_failures import OddFrames
from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Pipeline
from wattgate.drivers.inference import Model
from wattgate.policies.gating import MotionGate


def test_media_time_goes_on_when_the_source_fps_changes() -> None:
    source = OddFrames(bad=0, good=0)
    source.fps = 15.0
    pipeline = Pipeline(source, MotionGate(GateConfig()), Model.load(None),
                        on_result=lambda _: None, on_motion=lambda *_: None)
    times = []
    for _ in range(9000):
        times.append(pipeline._gate_clock(None))  # type: ignore[arg-type]  # media time: no frame read
        pipeline.counters.frames += 1
    source.fps = 30.0  # the file replaced by one of twice the rate
    for _ in range(300):
        times.append(pipeline._gate_clock(None))  # type: ignore[arg-type]
        pipeline.counters.frames += 1
    steps = [b - a for a, b in zip(times, times[1:])]
    assert min(steps) > 0, "media time went back"
    assert abs(steps[9000] - 1 / 30) < 1e-6 and abs(steps[-1] - 1 / 30) < 1e-6
    assert abs(steps[0] - 1 / 15) < 1e-6
