"""`wattgate simulate`'s ``governor_only`` baseline is the board as it ships: the NPU's
runtime PM stays as the board left it.

On the Raspberry Pi 5 the PCI core leaves the Hailo at power/control "on" (stock Raspberry
Pi OS), so the stock baseline keeps it powered between frames, as ``always_on`` does (the
Hailo has one clock: no devfreq to raise). On the RK3588 the RKNPU ships at "auto", so the
baseline still lets it suspend between frames.

The simulation runs the real controller on the boards' fake sysfs trees; the model's time
is given (``model_ms``) instead of measured, so no model is loaded."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.fixtures.boards import describe, rpi5
from wattgate.simulate import Footage, simulate

FPS, FRAMES = 5.0, 60


def blank_footage() -> Footage:
    """A still scene with one labelled event: every baseline infers every frame."""
    frame = np.zeros((120, 160, 3), np.uint8)
    return Footage("blank", FPS, FRAMES, ((10, 20),), lambda: (frame for _ in range(FRAMES)))


def npu_joules(report: dict[str, Any], baseline: str) -> float:
    return float(report["baselines"][baseline]["breakdown_j"]["npu"])


def test_the_pi5_stock_baseline_keeps_the_hailo_on_as_shipped() -> None:
    assert describe("rpi5").files[f"{rpi5.HAILO}/power/control"].strip() == "on"
    report = simulate("rpi5", blank_footage(), model_ms=20.0)
    assert npu_joules(report, "governor_only") > 0.0
    assert npu_joules(report, "governor_only") == npu_joules(report, "always_on")


def test_the_rk3588_stock_baseline_still_lets_its_npu_suspend() -> None:
    report = simulate("rk3588", blank_footage(), model_ms=20.0)
    assert 0.0 < npu_joules(report, "governor_only") < npu_joules(report, "always_on")
