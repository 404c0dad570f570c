"""A frame the model cannot be run on is counted and logged once per streak, not once each.

A frame a camera's driver hands over that does not convert to colour (an odd buffer) gates
(its luma is fine) but fails at the model: it was an ERROR and a traceback per frame, up to
the camera's rate, for as long as it lasted, and the status's counters did not show it.
No camera here hands over such frames on demand, so a stand-in source does (its frames'
colour conversion raises, as a driver's odd buffer made it raise); the pipeline, the gate
and the model are the real ones.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Optional

import numpy as np
import pytest

from wattgate.config import GateConfig
from wattgate.daemon.pipeline import Inferred, Pipeline
from wattgate.drivers.camera import Frame
from wattgate.drivers.inference import Model
from wattgate.policies.gating import MotionGate

HANG_S = 60.0  # a hang guard, never a measure of time
WIDTH, HEIGHT = 64, 48


class OddFrames:
    """A paced-by-nobody source of `bad` frames that fail their colour conversion, then
    good ones, then it ends."""

    width, height, fps, paced, live = WIDTH, HEIGHT, 30.0, False, False
    description = "a stand-in camera with odd buffers"

    def __init__(self, bad: int, good: int) -> None:
        self.left = [True] * bad + [False] * good
        self.index = 0

    def read(self) -> Optional[Frame]:
        if not self.left:
            return None
        bad = self.left.pop(0)
        self.index += 1
        luma = np.full((HEIGHT, WIDTH), 128, np.uint8)
        picture = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)

        def decode() -> Any:
            if bad:
                raise ValueError("cannot reshape the buffer into its picture")
            return picture
        return Frame(self.index, time.time(), time.monotonic(), None, luma=luma,
                     decode=decode, size=(WIDTH, HEIGHT))

    def close(self) -> None:
        pass


def test_a_streak_of_frames_the_model_cannot_take_is_one_error_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    results: list[Inferred] = []
    done = threading.Event()

    def on_result(inferred: Inferred) -> None:
        results.append(inferred)
        if len(results) == 5:
            done.set()

    pipeline = Pipeline(OddFrames(bad=20, good=5), MotionGate(GateConfig(enabled=False)),
                        Model.load(None), on_result=on_result, on_motion=lambda *_: None)
    with caplog.at_level(logging.INFO, logger="wattgate.pipeline"):
        pipeline.start()
        try:
            assert done.wait(HANG_S), "the good frames after the bad ones were not inferred"
        finally:
            pipeline.stop()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "cannot reshape" in caplog.text  # why, once
    assert any("works again after 20" in r.getMessage() for r in caplog.records)
    status = pipeline.status()
    assert status["infer_failed"] == 20
    assert status["inferred"] == 5


class ColourForLuma(OddFrames):
    """`bad` frames whose luma plane is a colour picture (a driver that mislabels its
    format), which the gate refuses, then good ones."""

    def read(self) -> Optional[Frame]:
        frame = OddFrames.read(self)
        if frame is not None and self.index <= self.bad:
            return dataclasses.replace(frame, luma=np.full((HEIGHT, WIDTH, 3), 128, np.uint8))
        return frame

    def __init__(self, bad: int, good: int) -> None:
        super().__init__(0, bad + good)
        self.bad = bad


def flaky(source: OddFrames, frames: int) -> OddFrames:
    """`source` made to fail on every other frame of `frames` (a flaky driver), the way
    its bad frames fail."""
    bad = ColourForLuma(frames, 0) if isinstance(source, ColourForLuma) else OddFrames(frames, 0)
    good = OddFrames(0, frames)
    pick = [bad if n % 2 == 0 else good for n in range(frames)]

    class Flaky(OddFrames):
        def read(self) -> Optional[Frame]:
            if not pick:
                return None
            frame = pick.pop(0).read()
            self.index += 1
            return None if frame is None else dataclasses.replace(frame, index=self.index)

    return Flaky(0, 0)


@pytest.mark.parametrize("stage", ["gate", "inference"])
@pytest.mark.parametrize("pattern", ["streak", "every other frame"])
def test_a_streak_of_failures_is_one_error_for_clients(stage: str, pattern: str) -> None:
    """The callback the daemon turns into an `error` event: once per streak, naming the
    stage, why and the first frame it failed on; and a stage failing on every other frame
    is told once, not at each failure."""
    errors: list[tuple[str, str, Optional[int]]] = []
    source = ColourForLuma(bad=12, good=5) if stage == "gate" else OddFrames(bad=12, good=5)
    if pattern == "every other frame":
        source = flaky(source, 40)
    pipeline = Pipeline(source, MotionGate(GateConfig(enabled=stage == "gate")),
                        Model.load(None), on_result=lambda _: None,
                        on_motion=lambda *_: None,
                        on_error=lambda *error: errors.append(error))
    pipeline.start()
    try:
        deadline = time.monotonic() + HANG_S
        while not pipeline.status()["source_ended"] and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        pipeline.stop()
    assert pipeline.status()["source_ended"], "the frames after the failures were not read"
    assert len(errors) == 1, errors
    why = "luma plane has one channel" if stage == "gate" else "cannot reshape"
    assert errors[0][0] == stage and why in errors[0][1] and errors[0][2] == 1
    assert errors[0][1].startswith("ValueError: ")
