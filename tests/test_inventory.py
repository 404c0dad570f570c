"""probe / format_inventory / to_json on every board, and camera listing without udev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.boards import ALL, BOARDS, energy_model, materialize, module
from wattgate.drivers.inventory import KEYS, Camera, format_inventory, probe, survey_cameras
from wattgate.drivers.sysfs import Sysfs

MUST_SAY = {
    "rk3588": [
        "policy0: CPUs 0,1,2,3",
        "policy6: CPUs 6,7",
        "NPU fdab0000.npu: rknpu",
        "GPU fb000000.gpu",
        "300-1000 MHz",
        "npu-thermal",
        "dmc",
    ],
    "jetson-orin-nano": [
        "policy4: CPUs 4,5",
        "GPU 17000000.ga10b: nvgpu",
        "railgate_enable 1",
        "VDD_IN",
        "VDD_CPU_GPU_CV",
        "VDD_SOC",
        "tj-thermal",
    ],
    "rpi5": ["policy0: CPUs 0,1,2,3", "NPU 0000:01:00.0: hailo", "control on", "cpu-thermal"],
    "imx8mp": [
        "NPU 40000000.mix_gpu_ml: galcore",
        "gpu_govern: overdrive of [overdrive nominal]",
        "cpu-thermal",
        "soc-thermal",
    ],
    "intel-mtl": [
        "intel_pstate",
        "energy_performance_preference balance_performance",
        "NPU accel0: intel_vpu",
        "npu_busy_time_us",
        "RAPL intel-rapl:0 package-0",
        "BAT0: Battery, Discharging, 76%, 7.31 W",
        "AC: Mains, offline",
    ],
}


@pytest.mark.parametrize("name", BOARDS)
def test_probe_text_names_the_knobs_and_their_keys(name: str, tmp_path: Path) -> None:
    inv = probe(materialize(name, tmp_path))
    assert not inv.empty
    text = format_inventory(inv)
    for needle in MUST_SAY[name]:
        assert needle in text, needle
    assert KEYS["cpufreq"] in text
    npu = inv.accelerator("npu")
    if npu is not None:
        assert KEYS["npu"] in text and KEYS["runtime_pm"] in text
    assert "Nothing to steer" not in text


@pytest.mark.parametrize("name", ALL)
def test_json_is_complete_and_parses(name: str, tmp_path: Path) -> None:
    inv = probe(materialize(name, tmp_path))
    data = json.loads(inv.to_json())
    assert data["root"] == str(tmp_path)
    assert len(data["policies"]) == len(inv.policies)
    assert {a["name"] for a in data["accelerators"]} == {a.name for a in inv.accelerators}
    assert data["keys"] == KEYS


def test_a_machine_with_nothing_says_so(tmp_path: Path) -> None:
    inv = probe(materialize("bare", tmp_path))
    assert inv.empty
    text = format_inventory(inv)
    assert "Nothing to steer or read here" in text
    assert "CPU frequency policies: none" in text


def test_config_override_and_extra_runtime_pm_device(tmp_path: Path) -> None:
    inv = probe(
        materialize("rk3588", tmp_path),
        gpu="/sys/class/devfreq/dmc",
        runtime_pm_devices=("devices/platform/fb000000.gpu",),
    )
    gpu = inv.accelerator("gpu")
    assert gpu is not None and gpu.devfreq == "dmc" and gpu.source == "config"
    assert "devices/platform/fb000000.gpu" in {p.device for p in inv.runtime_pm}


@pytest.mark.parametrize("spelling", ["/sys/devices/platform/fc000000.usb",
                                      "devices/platform/fc000000.usb/"])
def test_a_runtime_pm_device_is_found_however_the_config_spells_its_path(
    spelling: str, tmp_path: Path
) -> None:
    """power.runtime_pm_devices takes a path as power.npu does: /sys/devices/... is the
    device under the root. probe looked for sys/devices/... and left the device out."""
    root = materialize("rk3588", tmp_path)
    power = root / "devices/platform/fc000000.usb/power"
    power.mkdir(parents=True)
    (power / "control").write_text("auto\n")
    (power / "runtime_status").write_text("active\n")
    inv = probe(root, runtime_pm_devices=(spelling,))
    assert "devices/platform/fc000000.usb" in {p.device for p in inv.runtime_pm}


def test_cameras_are_passed_through(tmp_path: Path) -> None:
    cam = Camera("/dev/video0", "HD USB Camera", "/sys/devices/x/video0", "usb", ":capture:")
    inv = probe(materialize("rpi5", tmp_path), cameras=[cam])
    assert "/dev/video0: HD USB Camera" in format_inventory(inv)


def test_survey_cameras_without_udev_or_video4linux_nodes_is_empty(tmp_path: Path) -> None:
    """Without udev the nodes come from sysfs (tests/test_probe_cameras.py); none there, none
    listed."""
    class Broken:
        def list_devices(self, **kwargs: object) -> list[object]:
            raise OSError("no udev here")

    assert survey_cameras(Broken(), Sysfs(tmp_path)).cameras == []
    assert isinstance(survey_cameras().cameras, list)  # whatever this machine has, never raises


@pytest.mark.parametrize("name", BOARDS)
def test_every_board_documents_its_sources(name: str) -> None:
    mod = module(name)
    assert "Sources" in (mod.__doc__ or "")
    model = energy_model(name)
    assert model is not None and model["source"]


def test_rk3588_energy_model_matches_its_opp_tables(tmp_path: Path) -> None:
    model = energy_model("rk3588")
    assert model is not None
    inv = probe(materialize("rk3588", tmp_path))
    little = {p.name: p for p in inv.policies}["policy0"]
    assert [f for f, _ in model["cpu"]["policy0"]["opps_khz_uv"]] == list(little.frequencies_khz)
    npu = next(d for d in inv.devfreq if d.name == "fdab0000.npu")
    assert [f for f, _ in model["npu"]["opps_hz_uv"]] == list(npu.frequencies_hz)
    # P(mW) = C * f(MHz) * V^2 / 1000 (Documentation/power/energy-model.rst), at 1.8 GHz
    c = model["cpu"]["policy0"]["dynamic_power_coefficient"]
    assert c * 1800 * 0.95**2 / 1000 == pytest.approx(162.45)
