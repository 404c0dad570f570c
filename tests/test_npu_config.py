"""power.npu / power.gpu as the sysadmin writes them: a class path or an accel device name
stands for the device detection finds, and a value naming nothing is said aloud.

A configured value replaces detection for its kind, so a value that resolved to the wrong
directory (or to nothing) turned the NPU's runtime PM, or all NPU control, off in silence.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.logs import MessageId
from wattgate.daemon.power import PowerController

MTL_NPU = "devices/pci0000:00/0000:00:0b.0"


def make(tmp_path: Path, board: str, **power: Any) -> PowerController:
    root = materialize(board, tmp_path / "sys")
    raw = {"power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
                     **power}}
    return PowerController(parse_config(raw))


@pytest.mark.parametrize("value", [None, "/sys/class/accel/accel0", "accel0",
                                   "/sys/class/accel/accel0/device", f"/sys/{MTL_NPU}"])
def test_every_way_of_naming_the_intel_npu_drives_its_runtime_pm(
    tmp_path: Path, value: Optional[str]
) -> None:
    pc = make(tmp_path, "intel-mtl", **({"npu": value} if value else {}))
    pc.start(0.0)
    try:
        assert pc.npu_device == MTL_NPU
        assert pc.caps.npu_pm == (MTL_NPU,)
        assert f"{MTL_NPU}/power/control" in pc.applied
    finally:
        pc.stop()


def failures(caplog: Any, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if getattr(r, "MESSAGE_ID", None) == MessageId.KNOB_FAILED
            and getattr(r, "KNOB", None) == key]


def test_an_npu_name_that_resolves_to_nothing_is_a_warning(tmp_path: Path, caplog: Any) -> None:
    pc = make(tmp_path, "rk3588", npu="fdab0000.npuu")
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    try:
        assert pc.npu_device is None  # the value still replaces detection: nothing guessed
        (message,) = failures(caplog, "power.npu")
        assert "'fdab0000.npuu'" in message
        # what the board offers, to name instead
        assert "fdab0000.npu (npu, devices/platform/fdab0000.npu)" in message
        assert "devfreq devices: dmc, fb000000.gpu, fdab0000.npu" in message
        assert not failures(caplog, "power.gpu")
    finally:
        pc.stop()


def test_a_gpu_name_that_resolves_to_nothing_is_a_warning(tmp_path: Path, caplog: Any) -> None:
    pc = make(tmp_path, "rk3588", gpu="/sys/devices/platform/fb000000.gpuu")
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    try:
        (message,) = failures(caplog, "power.gpu")
        assert "'/sys/devices/platform/fb000000.gpuu'" in message
        assert "fb000000.gpu (gpu, devices/platform/fb000000.gpu)" in message
        assert pc.npu_device == "devices/platform/fdab0000.npu"  # the NPU is unaffected
    finally:
        pc.stop()


def test_a_value_that_resolves_says_nothing(tmp_path: Path, caplog: Any) -> None:
    pc = make(tmp_path, "rk3588", npu="fdab0000.npu", gpu="fb000000.gpu")
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.start(0.0)
    try:
        assert not failures(caplog, "power.npu") and not failures(caplog, "power.gpu")
    finally:
        pc.stop()
