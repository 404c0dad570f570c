"""Readings that real boards give and the drivers misread: peripheral batteries, chargers
of the USB and wireless kinds, meter rails that fail a read, indexed IIO light channels.

Fake sysfs trees laid out as the kernel lays them out (real files, real symlinks). Where a
read has to fail with an errno a plain file cannot give (EIO, EAGAIN from an I2C chip),
FailingReads stands in for the driver's show()."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.amd_hwmon import amdgpu_apu, amdgpu_card
from tests.fixtures.boards import Board, materialize
from tests.test_battery_unknown import FailingReads
from wattgate.daemon.power_inputs import InputReader
from wattgate.daemon.sensors import find_light_sensor
from wattgate.drivers import iio, meters, supply
from wattgate.drivers.sysfs import Sysfs

INA226 = "devices/platform/soc/fe804000.i2c/i2c-1"
LIGHT = "devices/platform/soc/fe804000.i2c/i2c-1/1-0044/iio:device0"


# -- power_supply ----------------------------------------------------------------------------


def test_a_wireless_mouse_battery_is_not_the_boards(tmp_path: Path) -> None:
    """A Bluetooth mouse's battery (hid-generic, `scope` Device) is a power_supply of type
    Battery too. On a mains-powered box without an AC supply it was taken for the board's:
    its "Discharging" made on_battery true and its 15 % fired battery_below rules."""
    b = Board()
    b.power_supply("devices/virtual/misc/uhid/0005:046D:B03A.0001", "hid-e3:5c:0b:4a:11:02-battery",
                   {"type": "Battery", "scope": "Device", "status": "Discharging",
                    "capacity": 15, "online": 1, "present": 1})
    inputs = InputReader(Sysfs(b.write(tmp_path)), {}).read(0.0)
    assert inputs.readings.on_battery is False  # on mains: no battery of its own
    assert inputs.readings.battery_percent is None
    assert inputs.battery is None


@pytest.mark.parametrize("charger", ["USB_C", "USB_PD_DRP", "USB_DCP", "Wireless"])
def test_a_usb_or_wireless_charger_online_is_not_on_battery(tmp_path: Path,
                                                             charger: str) -> None:
    """Only Mains, USB and USB_PD counted as outside power: a laptop charged over a USB-C
    port whose ACPI AC stays offline (cros-usbpd-charger reports USB_C, USB_PD_DRP) was on
    battery while charging, and a phone-class board on a USB_DCP or wireless charger too."""
    root = materialize("intel-mtl", tmp_path)
    b = Board()
    b.power_supply("devices/platform/cros-usbpd-charger.1.auto", "CROS_USBPD_CHARGER0",
                   {"type": charger, "online": 1, "status": "Charging"})
    b.write(root)
    assert supply.on_battery(supply.discover_supplies(Sysfs(root))) is False


# -- hwmon meters ----------------------------------------------------------------------------


def _ina226_rails(b: Board) -> None:
    """Two unlabelled INA226 on the board's supplies, 4.0 W and 2.5 W."""
    for n, (addr, uw) in enumerate((("1-0040", 4_000_000), ("1-0041", 2_500_000))):
        dev = f"{INA226}/{addr}"
        b.device(dev, bus="i2c", driver="ina2xx")
        b.hwmon(dev, n + 2, {"name": "ina226", "in1_input": 5000, "power1_input": uw})


@pytest.mark.parametrize("err", [errno.EIO, errno.EAGAIN])
def test_an_input_rail_that_fails_a_read_is_no_reading_not_the_other_rails(
    tmp_path: Path, err: int
) -> None:
    """VDD_IN is the whole board; VDD_CPU_GPU_CV and VDD_SOC are parts of it. A VDD_IN read
    the INA3221 did not answer made the sum of the parts the board's watts, 2.8 W for 5.2 W."""
    root = materialize("jetson-orin-nano", tmp_path / "sys")
    io = FailingReads()
    reader = InputReader(Sysfs(root, io), {})
    assert reader.read(0.0).meter_source == "hwmon VDD_IN"
    io.failing[str((root / "class/hwmon/hwmon1/curr1_input").resolve())] = err
    inputs = reader.read(1.0)
    assert (inputs.meter_w, inputs.meter_source) == (None, None)


def test_a_rail_that_fails_a_read_leaves_no_sum_of_the_rest(tmp_path: Path) -> None:
    """Without an input rail the board's watts are the sum of the rails: with one of them
    not answering, the sum of the others was published as the board's, too low."""
    b = Board()
    _ina226_rails(b)
    root = b.write(tmp_path)
    io = FailingReads()
    reader = InputReader(Sysfs(root, io), {})
    assert reader.read(0.0).meter_w == pytest.approx(6.5)
    io.failing[str((root / "class/hwmon/hwmon2/power1_input").resolve())] = errno.EIO
    inputs = reader.read(1.0)
    assert (inputs.meter_w, inputs.meter_source) == (None, None)


@pytest.mark.parametrize("chip, scope, rails", [
    (lambda b: amdgpu_apu(b, 4, 9_034_000), "package", (meters.Rail("PPT", None, None, 9.034),)),
    (lambda b: amdgpu_card(b, 5, 31_000_000), "device", (meters.Rail("PPT", None, None, 31.0),)),
], ids=["apu", "discrete-card"])
def test_an_amdgpu_sensor_is_not_summed_with_the_board_rails(
    tmp_path: Path, chip: Callable[[Board], None], scope: str, rails: tuple[meters.Rail, ...]
) -> None:
    """amdgpu's PPT on an APU is the processor package's power, fed by the board's supplies
    the INA226 measure: summed with them it was counted twice (15.4 W for 6.5 W), as a rail
    named "vddnb" (in1_label, the APU's northbridge voltage) with the PPT's watts. A discrete
    card's (no vddnb: amdgpu shows it on APUs only) is the card's own power: neither a rail
    of the board's sum nor the processor package."""
    b = Board()
    _ina226_rails(b)
    chip(b)
    root = b.write(tmp_path)
    inputs = InputReader(Sysfs(root), {}).read(0.0)
    assert (inputs.meter_w, inputs.meter_source) == (pytest.approx(6.5), "hwmon rails")
    (found,) = [m for m in meters.discover_meters(Sysfs(root)) if m.chip == "amdgpu"]
    assert (found.scope, found.rails) == (scope, rails)
    assert (meters.package_meter([found]) is None) == (scope != "package")


@pytest.mark.parametrize("van_gogh", [False, True], ids=["PPT", "slowPPT+fastPPT"])
def test_an_apu_laptop_with_no_rapl_counter_to_read_measures_its_package(
    tmp_path: Path, van_gogh: bool
) -> None:
    """With no board rail and no RAPL counter the daemon may read (energy_uj is root's since
    Linux 5.10), the APU's PPT is the package's watts, as RAPL's package zone would be: it
    was a board rail "vddnb" read from power1_input, and Van Gogh, with power*_average only,
    had no meter at all and fell to the battery. Its fastPPT is slowPPT's package over a
    shorter window, not a second part of it."""
    root = materialize("intel-mtl", tmp_path / "sys")
    for zone in root.glob("class/powercap/intel-rapl:*"):
        (zone / "energy_uj").unlink()  # no counters: an AMD laptop with powercap unreadable
    b = Board()
    amdgpu_apu(b, 4, 9_034_000, van_gogh=van_gogh)
    b.write(root)
    inputs = InputReader(Sysfs(root), {}).read(0.0)
    assert inputs.meter_source == "hwmon amdgpu package"
    assert inputs.meter_w == pytest.approx(9.034)


# -- IIO light -------------------------------------------------------------------------------


@pytest.mark.parametrize("attrs,lux", [
    ({"name": "isl29018", "in_illuminance0_input": 123}, 123.0),
    ({"name": "tsl2563", "in_illuminance0_input": "87.5\n"}, 87.5),
    # an indexed raw channel scaled by the type's shared scale (sysfs-bus-iio)
    ({"name": "al3010", "in_illuminance0_raw": 240, "in_illuminance_scale": "0.833333"},
     200.0),
], ids=["isl29018", "tsl2563", "shared-scale"])
def test_an_indexed_illuminance_channel_is_a_light_sensor(
    tmp_path: Path, attrs: dict[str, str | int], lux: float
) -> None:
    """isl29018, tsl2563, tsl2583 and tsl2772 name their channel in_illuminance0_input: only
    in_illuminance_input and _raw were looked for, so light = "auto" found no sensor."""
    b = Board()
    b.attrs(LIGHT, attrs)
    b.link("bus/iio/devices/iio:device0", LIGHT)
    fs = Sysfs(b.write(tmp_path))
    assert find_light_sensor(fs, "auto") == ("iio:device0", "")
    sensor = iio.read_sensor(fs, "iio:device0")
    assert sensor is not None and sensor.lux == pytest.approx(lux, rel=1e-5)


@pytest.mark.parametrize("status,expected", [("Unknown", None), ("Not charging", False),
                                             ("Discharging", True)])
def test_a_battery_status_of_unknown_is_not_mains(tmp_path: Path, status: str,
                                                  expected: bool | None) -> None:
    """With no charger to ask, the battery's status tells: "Unknown" (a fuel gauge between
    samples, a bq27xxx that has not decided) was taken for "on mains", so on_battery rules
    let go; it is unknown. "Not charging" is outside power holding the charge."""
    b = Board()
    b.power_supply("devices/platform/soc/fe804000.i2c/i2c-1/1-0055", "bq27546-0",
                   {"type": "Battery", "status": status, "capacity": 60})
    assert supply.on_battery(supply.discover_supplies(Sysfs(b.write(tmp_path)))) is expected
