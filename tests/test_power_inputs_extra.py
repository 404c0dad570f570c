"""What the power tick reads of IIO devices, and what the status shows of the batteries.

The tick reads the JetPack 4 rail meters for their watts and the light sensor
`sensors.light` names, and nothing else under IIO: with light = "none" it read every channel
of every device (illuminance, accelerometers, ADCs) each second and threw the lux away.
Reads are counted on a fake board tree of real files through a counting I/O layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.boards import Board
from tests.test_power_inputs_edges import jetpack4_rails
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
