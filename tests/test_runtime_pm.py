"""Runtime PM of the accelerator on every board, and the vendor knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.boards import BOARDS, Board, FaultyIO, faults, materialize, rpi5
from wattgate.daemon.rollback import JournaledWriter, SysfsJournal
from wattgate.drivers import runtime_pm, vendor
from wattgate.drivers.accel import find_accelerators
from wattgate.drivers.sysfs import (
    AttributeDenied,
    AttributeInvalid,
    AttributeMissing,
    Sysfs,
    SysfsError,
)

# board -> {accelerator name: (control, status, autosuspend_delay_ms)}
EXPECTED: dict[str, dict[str, tuple[str, str, int | None]]] = {
    "rk3588": {
        "fdab0000.npu": ("auto", "suspended", 1000),
        "fb000000.gpu": ("auto", "active", 1000),
    },
    "jetson-orin-nano": {"17000000.ga10b": ("auto", "suspended", 500)},
    "rpi5": {"0000:01:00.0": ("on", "active", None)},
    "imx8mp": {"40000000.mix_gpu_ml": ("auto", "suspended", None)},
    "intel-mtl": {"accel0": ("auto", "suspended", 10)},
}


@pytest.mark.parametrize("name", BOARDS)
def test_read_and_set_runtime_pm(name: str, tmp_path: Path) -> None:
    fs = Sysfs(materialize(name, tmp_path))
    accs = find_accelerators(fs)
    assert {a.name for a in accs} == set(EXPECTED[name])
    for acc in accs:
        pm = runtime_pm.read_runtime_pm(fs, acc.device)
        assert pm is not None
        assert (pm.control, pm.status, pm.autosuspend_delay_ms) == EXPECTED[name][acc.name]
        assert pm.active_time_ms is not None and pm.suspended_time_ms is not None
        other = "on" if pm.control == "auto" else "auto"
        assert runtime_pm.set_control(fs, acc.device, other) is True
        assert runtime_pm.set_control(fs, acc.device, other) is False
        with pytest.raises(AttributeInvalid):
            runtime_pm.set_control(fs, acc.device, "off")
        if pm.autosuspend_delay_ms is None:
            with pytest.raises(AttributeMissing):
                runtime_pm.set_autosuspend_delay(fs, acc.device, 200)
        else:
            runtime_pm.set_autosuspend_delay(fs, acc.device, 200)
            assert fs.read_int(f"{acc.device}/power/autosuspend_delay_ms") == 200


def test_device_without_runtime_pm(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    assert runtime_pm.read_runtime_pm(fs, "devices/platform/dmc") is None


def test_permission_denied_points_at_the_rule(tmp_path: Path) -> None:
    root = materialize("write-fail", tmp_path)
    fs = Sysfs(root, FaultyIO(root, faults("write-fail")))
    with pytest.raises(AttributeDenied, match=r"60-wattgate\.rules"):
        runtime_pm.set_control(fs, "devices/platform/fdab0000.npu", "on")


def test_galcore_gpu_govern(tmp_path: Path) -> None:
    fs = Sysfs(materialize("imx8mp", tmp_path))
    state = vendor.read_gpu_govern(fs)
    assert state == vendor.GalcoreGovern(("overdrive", "nominal"), "overdrive")
    with pytest.raises(AttributeInvalid):
        vendor.set_gpu_govern(fs, "underdrive")  # not in this board's OPP table
    journal = SysfsJournal(tmp_path / "state", fs)
    writer = JournaledWriter(journal)
    assert vendor.set_gpu_govern(writer, "nominal") is True
    assert fs.read(vendor.GALCORE_GOVERN) == "nominal"
    assert vendor.set_gpu_govern(writer, "nominal") is False
    # the journal keeps a writable mode name, not the multi-line report
    assert journal.original(vendor.GALCORE_GOVERN) == "overdrive\n"
    journal.restore()
    assert fs.read(vendor.GALCORE_GOVERN) == "overdrive"


@pytest.mark.parametrize("name", BOARDS)
def test_vendor_knobs_only_where_the_board_has_them(name: str, tmp_path: Path) -> None:
    fs = Sysfs(materialize(name, tmp_path))
    assert (vendor.read_gpu_govern(fs) is not None) == (name == "imx8mp")
    for acc in find_accelerators(fs):
        gate = vendor.read_railgate(fs, acc.device)
        busy = vendor.read_npu_busy_us(fs, acc.device)
        assert (gate is not None) == (name == "jetson-orin-nano")
        assert (busy is not None) == (name == "intel-mtl")
        if gate is not None:
            assert vendor.set_railgate(fs, acc.device, False) is True
            assert vendor.read_railgate(fs, acc.device) is False
        else:
            with pytest.raises(AttributeMissing):
                vendor.set_railgate(fs, acc.device, True)
    assert vendor.read_apex(fs) == []


def test_coral_apex_temperatures(tmp_path: Path) -> None:
    """A Coral M.2 beside the Pi 5's PCIe: class/apex/apex_0 with temp and trips (m°C)."""
    b = Board()
    rpi5.build(b)
    dev = f"{rpi5.PCIE}/0000:01:00.0"
    for gone in (
        dev,
        "bus/pci/drivers/hailo",
        "bus/pci/devices/0000:01:00.0",
        "class/hailo_chardev",
    ):
        b.remove(gone)
    b.device(
        dev, bus="pci", driver="apex", runtime_pm={"control": "on", "runtime_status": "active"}
    )
    b.attrs(
        f"{dev}/apex/apex_0",
        {
            "temp": 41250,
            "trip_point0_temp": 85000,
            "trip_point1_temp": 90000,
            "trip_point2_temp": 95000,
            "hw_temp_warn1": 100000,
            "hw_temp_warn2": 100000,
        },
    )
    b.link("class/apex/apex_0", f"{dev}/apex/apex_0")
    fs = Sysfs(b.write(tmp_path))
    (chip,) = vendor.read_apex(fs)
    assert chip.temp_mc == 41250
    assert chip.trip_points_mc == (85000, 90000, 95000)
    (acc,) = find_accelerators(fs)
    assert (acc.kind, acc.vendor) == ("npu", "apex")


def test_galcore_report_without_a_current_mode_is_not_changed(tmp_path: Path) -> None:
    """A gpu_govern report that names no current mode gives nothing to write back: the
    journal used to keep the whole report as the 'original', which the driver's store
    ignores, so the mode was never restored. Now the switch is refused."""
    root = materialize("imx8mp", tmp_path / "sys")
    report = "GPU support 2 modes\noverdrive:\tcore_clk frequency: 1000000000\n" \
        "nominal:\tcore_clk frequency: 800000000\n"
    (root / vendor.GALCORE_GOVERN).write_text(report)
    journal = SysfsJournal(tmp_path / "state", Sysfs(root))
    with pytest.raises(SysfsError, match="names no current mode"):
        vendor.set_gpu_govern(JournaledWriter(journal), "nominal")
    assert (root / vendor.GALCORE_GOVERN).read_text() == report
    assert journal.attributes == []
