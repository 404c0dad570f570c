"""The energy estimate's powered states: a device is off only when runtime PM says
"suspended" ("unsupported", runtime PM disabled, keeps it powered), and the GPU a board
model has figures for is counted at its clock and power state, not left at 0 W.

The power controller runs on the fake sysfs tree of a real board (rk3588: NPU fdab0000.npu,
Mali GPU fb000000.gpu), as in tests/test_power_controller.py; nothing is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController

NPU_STATUS = "devices/platform/fdab0000.npu/power/runtime_status"
GPU_STATUS = "devices/platform/fb000000.gpu/power/runtime_status"
GPU_FREQ = "class/devfreq/fb000000.gpu/cur_freq"


@pytest.fixture
def rk3588(tmp_path: Path) -> Iterator[tuple[PowerController, Path]]:
    root = tmp_path / "sys"
    materialize("rk3588", root)
    c = PowerController(parse_config({"power": {"sysfs_root": str(root),
                                                "journal_dir": str(tmp_path / "journal")}}))
    c.start(0.0)
    yield c, root
    c.stop()


def watts(c: PowerController, root: Path, attribute: str, value: str, now: float) -> float:
    """The estimate's NPU or GPU watts after a tick with ``attribute`` reading ``value``."""
    (root / attribute).write_text(value + "\n")
    c.tick(now)
    assert c.last_estimate is not None
    return c.last_estimate.npu if "npu" in attribute else c.last_estimate.gpu


def test_an_npu_without_runtime_pm_is_counted_powered(
    rk3588: tuple[PowerController, Path],
) -> None:
    c, root = rk3588
    active = watts(c, root, NPU_STATUS, "active", 1.0)
    suspended = watts(c, root, NPU_STATUS, "suspended", 2.0)
    assert active > suspended
    assert watts(c, root, NPU_STATUS, "unsupported", 3.0) == active


def test_the_gpu_is_counted_at_its_clock_and_power_state(
    rk3588: tuple[PowerController, Path],
) -> None:
    c, root = rk3588
    model = c.energy_model
    assert model is not None and model.gpu is not None
    hz = int((root / GPU_FREQ).read_text())
    powered = watts(c, root, GPU_STATUS, "active", 1.0)
    assert powered == pytest.approx(model.gpu.powered_w(hz)) and powered > 0.0
    assert watts(c, root, GPU_STATUS, "suspended", 2.0) == pytest.approx(
        model.gpu.suspended_w)
    assert c.estimated.joules.gpu > 0.0  # integrated, not only shown
