"""`wattgate probe` names the runtime-PM keys only beside the devices the daemon drives.

The daemon drives the runtime PM of the NPU it takes and of power.runtime_pm_devices;
probe tagged every accelerator's runtime PM with npu_runtime_pm, so the GPU's seemed to
follow a key that never reached it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.boards import materialize
from wattgate import cli
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.drivers.inventory import KEYS

GPU = "devices/platform/fb000000.gpu"
NPU = "devices/platform/fdab0000.npu"


def probe(tmp_path: Path, capsys: pytest.CaptureFixture[str], power: str,
          *flags: str) -> str:
    config = tmp_path / "wattgate.toml"
    config.write_text(f'[power]\nsysfs_root = "{tmp_path / "sys"}"\n{power}')
    assert cli.main(["probe", "--config", str(config), *flags]) == 0
    return capsys.readouterr().out


def runtime_pm_line(text: str, device: str) -> str:
    """The runtime PM line under the accelerator on ``device``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f", {device} (found by" in line)
    return next(line for line in lines[start + 1:] if "runtime PM:" in line)


def daemon_pm(tmp_path: Path, **power: Any) -> tuple[str, ...]:
    """The devices whose runtime PM the daemon itself drives, for the probe to agree."""
    raw = {"power": {"sysfs_root": str(tmp_path / "sys"),
                     "journal_dir": str(tmp_path / "journal"), **power}}
    pc = PowerController(parse_config(raw))
    pc.start(0.0)
    try:
        return pc.caps.npu_pm
    finally:
        pc.stop()


def test_the_gpu_is_not_said_to_follow_npu_runtime_pm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    materialize("rk3588", tmp_path / "sys")
    assert daemon_pm(tmp_path) == (NPU,)
    text = probe(tmp_path, capsys, "")
    assert KEYS["runtime_pm"] in runtime_pm_line(text, NPU)
    gpu = runtime_pm_line(text, GPU)
    assert "npu_runtime_pm (auto|on)" not in gpu
    assert f'not driven: add "/sys/{GPU}" to power.runtime_pm_devices' in gpu
    data = json.loads(probe(tmp_path, capsys, "", "--json"))
    assert data["runtime_pm_driven"] == [NPU]


def test_a_listed_gpu_is_said_to_follow_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    materialize("rk3588", tmp_path / "sys")
    assert daemon_pm(tmp_path, runtime_pm_devices=[f"/sys/{GPU}"]) == (NPU, GPU)
    text = probe(tmp_path, capsys, f'runtime_pm_devices = ["/sys/{GPU}"]\n')
    assert "[listed in power.runtime_pm_devices: profile keys npu_runtime_pm" in (
        runtime_pm_line(text, GPU))
    assert KEYS["runtime_pm"] in runtime_pm_line(text, NPU)
