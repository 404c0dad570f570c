"""The energy estimate counts an NPU only when one was found.

A board is recognised by its device-tree compatible string, and its energy model has the
figures of its usual NPU: the Raspberry Pi 5's is the AI Kit's Hailo-8L, the RK3588's the
RKNPU. A Pi 5 without the AI Kit, or an RK3588 kernel without the NPU driver, has no NPU
drawing power, so its estimate has no NPU watts, however busy the model is.

The power controller runs on fake sysfs trees of the real boards with the accelerator
taken out; nothing is mocked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

from tests.fixtures.boards import describe, rk3588, rpi5
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.policies.energy import Watts


def estimate_after_ticks(root: Path, journal: Path) -> tuple[Optional[str], Watts, dict[str, Any]]:
    """The NPU found, the last estimate and the status's watts after two ticks."""
    c = PowerController(parse_config({"power": {"sysfs_root": str(root),
                                                "journal_dir": str(journal)}}))
    c.start(0.0)
    try:
        c.tick(1.0)
        c.tick(2.0)
        assert c.last_estimate is not None
        return c.npu_device, c.last_estimate, c.status()["watts"]
    finally:
        c.stop()


def test_a_pi5_without_the_ai_kit_has_no_npu_watts(tmp_path: Path) -> None:
    board = describe("rpi5")
    board.remove(rpi5.HAILO)
    board.remove("bus/pci/drivers/hailo")
    board.remove("class/hailo_chardev")
    root = board.write(tmp_path / "sys")
    npu, watts, status = estimate_after_ticks(root, tmp_path / "journal")
    assert npu is None
    assert watts.npu == 0.0
    assert status["model"] == "rpi5"  # still recognised, its CPU and the rest still counted
    assert status["estimate"]["npu"] == 0.0
    assert status["value"] == pytest.approx(watts.total)


def test_a_pi5_with_the_ai_kit_counts_the_hailo(tmp_path: Path) -> None:
    root = describe("rpi5").write(tmp_path / "sys")
    npu, watts, _ = estimate_after_ticks(root, tmp_path / "journal")
    assert npu == rpi5.HAILO
    assert watts.npu > 0.0  # powered at power/control "on": the Hailo's idle watts


def test_an_rk3588_kernel_without_the_npu_driver_has_no_npu_watts(tmp_path: Path) -> None:
    board = describe("rk3588")
    board.remove(rk3588.NPU)
    board.remove("class/devfreq/fdab0000.npu")
    root = board.write(tmp_path / "sys")
    npu, watts, _ = estimate_after_ticks(root, tmp_path / "journal")
    assert npu is None
    assert watts.npu == 0.0
    assert watts.cpu > 0.0 and watts.gpu > 0.0  # the parts that are there still count
