"""Frames the gate cannot judge are refused with an error that says what was wrong.

A frame with no rows or no columns raised ZeroDivisionError from deep inside the gate, and a
three-channel picture given to update_luma was quietly judged by its blue channel alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from wattgate.config import GateConfig
from wattgate.policies.gating import MotionGate


@pytest.mark.parametrize("shape", [(0, 0), (0, 640), (480, 0)])
def test_an_empty_luma_plane_is_refused_naming_its_size(shape: tuple[int, int]) -> None:
    gate = MotionGate(GateConfig())
    with pytest.raises(ValueError, match=f"{shape[1]}x{shape[0]}"):
        gate.update_luma(np.zeros(shape, np.uint8), 0.0)


@pytest.mark.parametrize("shape", [(0, 0), (0, 640), (480, 0)])
def test_an_empty_plane_with_the_cameras_size_is_refused_naming_its_size(
    shape: tuple[int, int],
) -> None:
    """As the pipeline calls it: the camera's size given, a reduced decode's plane empty."""
    gate = MotionGate(GateConfig())
    with pytest.raises(ValueError, match=f"{shape[1]}x{shape[0]} luma plane"):
        gate.update_luma(np.zeros(shape, np.uint8), 0.0, source_size=(640, 480))


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 640, 3), (480, 0, 3)])
def test_an_empty_bgr_frame_is_refused_naming_its_size(shape: tuple[int, int, int]) -> None:
    gate = MotionGate(GateConfig())
    with pytest.raises(ValueError, match=f"{shape[1]}x{shape[0]}"):
        gate.update_bgr(np.zeros(shape, np.uint8), 0.0)


def test_an_empty_frame_leaves_the_gate_working() -> None:
    gate = MotionGate(GateConfig())
    plane = np.full((120, 160), 90, np.uint8)
    assert gate.update_luma(plane, 0.0).reason == "calibrating"
    with pytest.raises(ValueError):
        gate.update_luma(np.zeros((0, 160), np.uint8), 0.1)
    assert gate.update_luma(plane, 0.2).reason == "calibrating"


def test_a_colour_picture_is_not_taken_for_a_luma_plane() -> None:
    """Its first channel (blue, in OpenCV's order) is not its luma."""
    gate = MotionGate(GateConfig())
    with pytest.raises(ValueError, match="3 channels"):
        gate.update_luma(np.zeros((120, 160, 3), np.uint8), 0.0)


def test_a_single_channel_plane_with_a_channel_axis_is_still_luma() -> None:
    gate = MotionGate(GateConfig())
    assert gate.update_luma(np.full((120, 160, 1), 90, np.uint8), 0.0).reason == "calibrating"
