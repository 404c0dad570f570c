"""What the power tick reads of IIO devices, and what the status shows of the batteries.

The status showed the first battery alone, where the rules judge every battery's charge
together: on a laptop with two, 97 % shown while the rules acted on 8 %.

The tick reads the JetPack 4 rail meters for their watts and the light sensor
`sensors.light` names, and nothing else under IIO: with light = "none" it read every channel
of every device (illuminance, accelerometers, ADCs) each second and threw the lux away.
Reads are counted on a fake board tree of real files through a counting I/O layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.boards import Board, materialize
from tests.test_power_inputs_edges import jetpack4_rails, two_batteries
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers.sysfs import OsIO, Sysfs

I2C = "devices/platform/7000c400.i2c/i2c-1"
LIGHT = f"{I2C}/1-0023/iio:device1"  # a bh1750: 240 counts × 0.833333 = 200 lx
ACCEL = f"{I2C}/1-0068/iio:device2"  # an mpu6050: an accelerometer and a die temperature


class CountingReads(OsIO):
    """Every attribute read, by its real path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def read_text(self, path: Path) -> str:
        self.paths.append(os.path.realpath(path))
        return super().read_text(path)

    def under(self, root: Path, device: str) -> list[str]:
        base = os.path.realpath(root / device)
        return [os.path.basename(p) for p in self.paths if p.startswith(base + os.sep)]


def jetson_with_sensors(tmp_path: Path) -> tuple[Path, CountingReads]:
    b = Board()
    jetpack4_rails(b, {"POM_5V_IN": 2479, "POM_5V_GPU": 0, "POM_5V_CPU": 374})
    b.attrs(LIGHT, {"name": "bh1750", "in_illuminance_raw": 240,
                    "in_illuminance_scale": "0.833333", "in_temp_input": 31000})
    b.attrs(ACCEL, {"name": "mpu6050", "in_accel_x_raw": 12, "in_accel_scale": "0.000598",
                    "in_temp_raw": 1200, "in_temp_scale": "2.941", "in_temp_offset": 12420})
    b.link("bus/iio/devices/iio:device1", LIGHT)
    b.link("bus/iio/devices/iio:device2", ACCEL)
    return b.write(tmp_path), CountingReads()


@pytest.mark.parametrize("light", ["none", "", "iio:device1", "auto"])
def test_the_tick_reads_the_rails_and_only_the_light_sensor_it_uses(
    tmp_path: Path, light: str,
) -> None:
    root, io = jetson_with_sensors(tmp_path)
    reader = InputReader(Sysfs(root, io), {}, light=light)
    for t in (0.0, 1.0):
        inputs = reader.read(t)
        assert (inputs.meter_w, inputs.meter_source) == (pytest.approx(2.479), "hwmon POM_5V_IN")
    assert io.under(root, ACCEL) == []
    if light in ("none", ""):
        assert inputs.readings.lux is None
        assert io.under(root, LIGHT) == []
    else:
        assert inputs.readings.lux == pytest.approx(200.0, rel=1e-5)
        # its illuminance, not its temperature, which nothing here uses
        read = io.under(root, LIGHT)
        assert "in_illuminance_raw" in read
        assert all(a.startswith("in_illuminance") for a in read), read


def test_the_status_shows_every_battery_and_the_charge_the_rules_judge(tmp_path: Path) -> None:
    """BAT0 idle at 97 % of 57 Wh, BAT1 in use at 8 % of 19 Wh: the status showed BAT0's
    97 % alone while the rules judged the two together, 74.75 %."""
    root, io = two_batteries(tmp_path, {"power_now": "9300000", "capacity": "8",
                                        "status": "Discharging", "energy_full": "19000000"})
    cfg = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")}})
    pc = PowerController(cfg, io=io)
    pc.start(0.0)
    pc.tick(1.0)
    power = pc.status()
    pc.stop()
    assert power["battery"]["name"] == "BAT0" and power["battery"]["percent"] == 97
    assert power["battery_percent"] == pytest.approx((97 * 57 + 8 * 19) / 76, abs=0.05)
    assert power["on_battery"] is True
    assert [(b["name"], b["percent"], b["status"]) for b in power["batteries"]] == [
        ("BAT0", 97, "Unknown"), ("BAT1", 8, "Discharging")]
    assert power["batteries"][1]["watts"] == pytest.approx(9.3)


def test_the_status_of_a_board_without_battery_says_it_is_on_mains(tmp_path: Path) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    cfg = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")}})
    pc = PowerController(cfg)
    pc.start(0.0)
    power = pc.status()
    pc.stop()
    assert power["on_battery"] is False
    assert "battery" not in power and "batteries" not in power and "battery_percent" not in power
