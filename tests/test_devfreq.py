"""devfreq and NPU/GPU identification on every board."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from tests.fixtures.boards import BOARDS, FaultyIO, faults, materialize
from wattgate.drivers import devfreq
from wattgate.drivers.accel import find_accelerators, find_gpu, find_npu
from wattgate.drivers.sysfs import AttributeBusy, AttributeInvalid, Sysfs

DEVFREQ = {
    "rk3588": {"dmc", "fb000000.gpu", "fdab0000.npu"},
    "jetson-orin-nano": {"17000000.ga10b"},
    "rpi5": set(),
    "imx8mp": set(),
    "intel-mtl": set(),
}
# kind -> (name, vendor, devfreq) per board; None where the board has none
ACCEL: dict[str, dict[str, Optional[tuple[str, str, Optional[str]]]]] = {
    "rk3588": {
        "npu": ("fdab0000.npu", "rknpu", "fdab0000.npu"),
        "gpu": ("fb000000.gpu", "mali", "fb000000.gpu"),
    },
    "jetson-orin-nano": {"npu": None, "gpu": ("17000000.ga10b", "nvgpu", "17000000.ga10b")},
    "rpi5": {"npu": ("0000:01:00.0", "hailo", None), "gpu": None},
    "imx8mp": {"npu": ("40000000.mix_gpu_ml", "galcore", None), "gpu": None},
    "intel-mtl": {"npu": ("accel0", "intel_vpu", None), "gpu": None},
}


@pytest.mark.parametrize("name", BOARDS)
def test_devfreq_discovery(name: str, tmp_path: Path) -> None:
    fs = Sysfs(materialize(name, tmp_path))
    devices = devfreq.discover_devfreq(fs)
    assert {d.name for d in devices} == DEVFREQ[name]
    for d in devices:
        assert d.governor in d.governors
        assert d.frequencies_hz and d.min_hz == d.frequencies_hz[0]
        assert fs.exists(d.device) and "/devfreq/" not in d.device


@pytest.mark.parametrize("name", BOARDS)
def test_npu_and_gpu_identification(name: str, tmp_path: Path) -> None:
    fs = Sysfs(materialize(name, tmp_path))
    for kind, finder in (("npu", find_npu), ("gpu", find_gpu)):
        acc = finder(fs)
        want = ACCEL[name][kind]
        if want is None:
            assert acc is None
            continue
        assert acc is not None and acc.kind == kind
        assert (acc.name, acc.vendor, acc.devfreq) == want
        assert fs.exists(f"{acc.device}/power/control")


def test_rk3588_npu_range_and_load(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    npu = devfreq.read_devfreq(fs, "fdab0000.npu")
    assert npu.frequencies_hz[0] == 300_000_000 and npu.frequencies_hz[-1] == 1_000_000_000
    assert npu.device == "devices/platform/fdab0000.npu"
    assert npu.load_percent == 0
    assert devfreq.parse_load("100@600000000Hz") == 100
    assert devfreq.parse_load("354") is None


@pytest.mark.parametrize("name", ["rk3588", "jetson-orin-nano"])
def test_governor_and_limits(name: str, tmp_path: Path) -> None:
    fs = Sysfs(materialize(name, tmp_path))
    for dev in devfreq.discover_devfreq(fs):
        wanted = ["nope", "powersave", "performance"]
        expected = next(g for g in wanted if g in dev.governors)
        assert devfreq.set_governor(fs, dev, wanted) == expected
        with pytest.raises(AttributeInvalid):
            devfreq.set_governor(fs, dev, ["nope"])
        table = dev.frequencies_hz
        middle = (table[0] + table[-1]) // 2
        _, cap = devfreq.set_limits(fs, dev, max_hz=middle)
        assert cap in table and cap <= middle
        assert fs.read_int(dev.attr("max_freq")) == cap


def test_npu_cap_snaps_down_to_an_opp(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    npu = devfreq.read_devfreq(fs, "fdab0000.npu")
    assert devfreq.set_limits(fs, npu, min_hz=350_000_000, max_hz=650_000_000) == (
        400_000_000,
        600_000_000,
    )


def test_configured_path_wins(tmp_path: Path) -> None:
    fs = Sysfs(materialize("intel-mtl", tmp_path))
    acc = find_npu(fs, "/sys/class/accel/accel0/device")
    assert acc is not None and acc.source == "config"
    assert acc.device == "devices/pci0000:00/0000:00:0b.0"
    assert find_npu(fs, "/sys/does/not/exist") is None


def test_configured_devfreq_name(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    acc = find_gpu(fs, "dmc")
    assert acc is not None and acc.devfreq == "dmc" and acc.device == "devices/platform/dmc"
    both = find_accelerators(fs, npu="class/devfreq/fdab0000.npu")
    assert [a.kind for a in both] == ["npu", "gpu"]


def test_missing_npu_devfreq(tmp_path: Path) -> None:
    fs = Sysfs(materialize("missing-knob", tmp_path))
    assert "fdab0000.npu" not in {d.name for d in devfreq.discover_devfreq(fs)}
    assert find_npu(fs) is None
    # the device is still there for an explicit config to name
    acc = find_npu(fs, "/sys/devices/platform/fdab0000.npu")
    assert acc is not None and acc.devfreq is None


def test_busy_governor_write(tmp_path: Path) -> None:
    root = materialize("write-fail", tmp_path)
    fs = Sysfs(root, FaultyIO(root, faults("write-fail")))
    npu = devfreq.read_devfreq(fs, "fdab0000.npu")
    with pytest.raises(AttributeBusy):
        devfreq.set_governor(fs, npu, ["performance"])
    assert fs.read(npu.attr("governor")) == "rknpu_ondemand"


def test_an_npu_table_with_a_word_that_is_not_a_number_is_no_table(tmp_path: Path) -> None:
    root = materialize("rk3588", tmp_path)
    (root / "class/devfreq/fdab0000.npu/available_frequencies").write_text("300000000 x\n")
    npu = devfreq.read_devfreq(Sysfs(root), "fdab0000.npu")
    assert npu.frequencies_hz == ()
    assert devfreq.snap_hz(npu, 450000000, upward=False) == 450000000
