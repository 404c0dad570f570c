"""Frames the gate cannot take, or cannot judge, fail clearly and do not hold episodes open.

The real Pipeline, MotionGate and bundled model on a scripted camera (a plain object
giving frames, see test_gate_reload_episode), and the gate on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.test_gate_reload_episode import FPS, STILL, T0, run_pipeline
from wattgate.config import GateConfig
from wattgate.policies.gating import MotionGate


def test_frames_the_gate_cannot_take_end_the_episode_after_its_cooldown() -> None:
    """Motion, then 8 s of odd buffers the gate refuses: the episode ends cooldown_s after
    its last moving frame, while the odd buffers still come, not when gating works again
    (an alarm stayed "in motion" for as long as a driver gave odd buffers)."""
    moving, bad = 30, 120
    plan = ["still"] * STILL + ["move"] * moving + ["bad"] * bad + ["still"] * 30
    pipeline, events = run_pipeline(plan, MotionGate(GateConfig(cooldown_s=2.0)))
    assert pipeline.counters.failed == bad
    last_moving = T0 + (STILL + moving - 1) / FPS
    assert pipeline._last_moving == pytest.approx(last_moving)
    assert [moving for moving, _, _ in events] == [True, False], events
    _, end, read = events[1]
    assert end == pytest.approx(last_moving + 2.0)
    assert read <= STILL + moving + bad  # told while the odd buffers still came


def test_a_constant_frame_with_a_zero_column_stride_is_gated() -> None:
    """np.broadcast_to(value, shape), the cheap grey frame of a simulator or test harness,
    has a column stride of 0: it was a ZeroDivisionError on every frame."""
    gate = MotionGate(GateConfig())
    flat = np.broadcast_to(np.uint8(50), (480, 640))
    assert flat.strides == (0, 0)
    reasons = {gate.update_luma(flat, i / 15).reason for i in range(40)}
    assert reasons <= {"calibrating", "heartbeat", "idle"}
    assert "idle" in reasons


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.bool_])
def test_a_frame_that_is_not_uint8_is_refused_by_name(dtype: type) -> None:
    """16-bit or float frames were taken silently: values beyond a byte read as a lighting
    change on every frame, and the gate calibrated for good."""
    gate = MotionGate(GateConfig())
    luma: Any = np.zeros((48, 64), dtype)  # not a MatLike: what a caller might pass
    with pytest.raises(ValueError, match=np.dtype(dtype).name):
        gate.update_luma(luma, 0.0)
    with pytest.raises(ValueError, match=np.dtype(dtype).name):
        gate.update_bgr(np.zeros((48, 64, 3), dtype), 0.0)
    assert gate.update_luma(np.zeros((48, 64), np.uint8), 0.0).reason == "calibrating"
