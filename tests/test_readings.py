"""Readings on every board: thermal zones, hwmon rails, RAPL energy, batteries, IIO."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.boards import BOARDS, Board, materialize
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers import iio, meters, supply, thermal
from wattgate.drivers.sysfs import Sysfs

ZONES = {"rk3588": 7, "jetson-orin-nano": 9, "rpi5": 1, "imx8mp": 2, "intel-mtl": 5}
METERS = {"jetson-orin-nano": {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}}
ENERGY = {"intel-mtl": {"package-0", "core", "uncore", "psys"}}
SUPPLIES = {"intel-mtl": {"BAT0": "Battery", "AC": "Mains"}}


@pytest.mark.parametrize("name", BOARDS)
def test_every_reading_on_every_board(name: str, tmp_path: Path) -> None:
    fs = Sysfs(materialize(name, tmp_path))
    zones = thermal.discover_zones(fs)
    assert len(zones) == ZONES[name]
    assert all(z.temp_mc is not None and 20000 <= z.temp_mc <= 60000 for z in zones)
    found = meters.discover_meters(fs)
    assert set(meters.rail_watts(found)) == METERS.get(name, set())
    assert {e.name for e in meters.discover_energy(fs)} == ENERGY.get(name, set())
    assert {s.name: s.type for s in supply.discover_supplies(fs)} == SUPPLIES.get(name, {})
    assert iio.discover_sensors(fs) == []


def test_rk3588_has_the_npu_zone_and_trips(tmp_path: Path) -> None:
    zones = thermal.discover_zones(Sysfs(materialize("rk3588", tmp_path)))
    npu = thermal.zone_by_type(zones, "npu-thermal")
    assert npu is not None and npu.celsius == pytest.approx(40.7)
    soc = thermal.zone_by_type(zones, "soc-thermal")
    assert soc is not None and soc.trips[-1] == thermal.Trip(115000, "critical")


def test_ina3221_rails_are_volts_times_amps(tmp_path: Path) -> None:
    (meter,) = meters.discover_meters(Sysfs(materialize("jetson-orin-nano", tmp_path)))
    assert meter.chip == "ina3221" and meter.path.endswith("1-0040/hwmon/hwmon1")
    vdd_in = meter.rails[0]
    assert vdd_in.label == "VDD_IN"
    assert vdd_in.volts == pytest.approx(5.072) and vdd_in.amps == pytest.approx(1.023)
    assert vdd_in.watts == pytest.approx(5.072 * 1.023)
    assert len(meter.rails) == 3  # the summation channel is not a rail


def test_ina226_power_input_in_microwatts(tmp_path: Path) -> None:
    b = Board()
    dev = "devices/platform/soc/fe804000.i2c/i2c-1/1-0040"
    b.device(dev, bus="i2c", driver="ina2xx")
    b.hwmon(
        dev,
        2,
        {
            "name": "ina226",
            "in0_input": 2,
            "in1_input": 12010,
            "curr1_input": 350,
            "power1_input": 4203500,
            "shunt_resistor": 10000,
        },
    )
    (meter,) = meters.discover_meters(Sysfs(b.write(tmp_path)))
    (rail,) = meter.rails
    assert rail.label == "ina226:1" and rail.watts == pytest.approx(4.2035)


def test_jetpack4_iio_rails(tmp_path: Path) -> None:
    b = Board()
    base = "devices/platform/7000c400.i2c/i2c-1/1-0040/iio:device0"
    b.attrs(
        base,
        {
            "name": "ina3221x",
            "rail_name_0": "POM_5V_IN",
            "in_power0_input": 2912,
            "rail_name_1": "POM_5V_GPU",
            "in_power1_input": 80,
        },
    )
    b.link("bus/iio/devices/iio:device0", base)
    found = meters.discover_meters(Sysfs(b.write(tmp_path)))
    assert meters.rail_watts(found) == {"POM_5V_IN": 2.912, "POM_5V_GPU": 0.08}


def test_rapl_wraparound_and_caller_timestamps(tmp_path: Path) -> None:
    fs = Sysfs(materialize("intel-mtl", tmp_path))
    pkg = next(e for e in meters.discover_energy(fs) if e.name == "package-0")
    assert pkg.max_energy_range_uj == 262143328850
    top = pkg.max_energy_range_uj
    assert meters.energy_delta_uj(100, 5_000_100, top) == 5_000_000
    assert meters.energy_delta_uj(top - 1_000_000, 4_000_000, top) == 5_000_000
    watts = meters.average_watts(top - 1_000_000, 10.0, 4_000_000, 12.0, top)
    assert watts == pytest.approx(2.5)
    assert meters.average_watts(1, 5.0, 2, 5.0, top) is None


def test_battery_and_mains(tmp_path: Path) -> None:
    fs = Sysfs(materialize("intel-mtl", tmp_path))
    supplies = supply.discover_supplies(fs)
    bat = next(s for s in supplies if s.is_battery)
    assert (bat.capacity_percent, bat.status) == (76, "Discharging")
    assert bat.watts == pytest.approx(7.312) and bat.energy_wh == pytest.approx(52.44)
    assert supply.on_battery(supplies) is True
    fs.write("class/power_supply/AC/online", "1")
    assert supply.on_battery(supply.discover_supplies(fs)) is False


def test_battery_power_from_voltage_and_current(tmp_path: Path) -> None:
    b = Board()
    b.power_supply(
        "devices/platform/soc/battery",
        "battery",
        {
            "type": "Battery",
            "status": "Discharging",
            "capacity": 40,
            "voltage_now": 3800000,
            "current_now": -500000,
        },
    )
    supplies = supply.discover_supplies(Sysfs(b.write(tmp_path)))
    assert supplies[0].watts == pytest.approx(1.9)
    assert supply.on_battery(supplies) is True
    assert supply.on_battery([]) is False  # no battery at all: on mains


def test_iio_light_and_temperature(tmp_path: Path) -> None:
    b = Board()
    light = "devices/platform/soc/fe804000.i2c/i2c-1/1-0023/iio:device0"
    b.attrs(
        light, {"name": "bh1750", "in_illuminance_raw": 240, "in_illuminance_scale": "0.833333"}
    )
    temp = "devices/platform/soc/fe804000.i2c/i2c-1/1-0076/iio:device1"
    b.attrs(temp, {"name": "bme280", "in_temp_input": 23450})
    b.link("bus/iio/devices/iio:device0", light)
    b.link("bus/iio/devices/iio:device1", temp)
    sensors = {s.chip: s for s in iio.discover_sensors(Sysfs(b.write(tmp_path)))}
    assert sensors["bh1750"].lux == pytest.approx(200.0, rel=1e-5)
    assert sensors["bme280"].celsius == pytest.approx(23.45)


def _bh1750(tmp_path: Path, **attrs: str | int | None) -> Sysfs:
    b = Board()
    light = "devices/platform/soc/fe804000.i2c/i2c-1/1-0023/iio:device0"
    values: dict[str, str | int | None] = {"name": "bh1750", "in_illuminance_raw": 240,
                                 "in_illuminance_scale": "0.833333"}
    values.update(attrs)
    b.attrs(light, {k: v for k, v in values.items() if v is not None})
    b.link("bus/iio/devices/iio:device0", light)
    return Sysfs(b.write(tmp_path))


@pytest.mark.parametrize("attrs", [
    {"in_illuminance_scale": "N/A"},
    {"in_illuminance_scale": ""},
    {"in_illuminance_scale": "nan"},
    {"in_illuminance_offset": "garbage"},
], ids=["scale-n/a", "scale-empty", "scale-nan", "offset-garbage"])
def test_iio_scale_or_offset_that_does_not_read_is_no_reading(
    tmp_path: Path, attrs: dict[str, str | int | None]
) -> None:
    """A scale that is there but does not read was taken for no scale at all: the raw count
    240 was published as 240 lx (200 lx really), a lighting change for nothing."""
    assert iio.read_sensor(_bh1750(tmp_path, **attrs), "iio:device0") is None


def test_iio_without_a_scale_attribute_is_the_raw_value(tmp_path: Path) -> None:
    sensor = iio.read_sensor(_bh1750(tmp_path, in_illuminance_scale=None), "iio:device0")
    assert sensor is not None and sensor.lux == 240.0


@pytest.mark.parametrize("attrs", [
    {"in_illuminance_raw": 0, "in_illuminance_offset": -3},
    {"in_illuminance_input": "-0.4"},
], ids=["raw-with-offset", "processed"])
def test_iio_lux_below_zero_is_darkness(tmp_path: Path, attrs: dict[str, str | int | None]) -> None:
    """Light is never negative: below 0 is a dark room read through the sensor's calibration
    offset, 0 lx (the lighting policy compares it so too), never a negative reading."""
    sensor = iio.read_sensor(_bh1750(tmp_path, **attrs), "iio:device0")
    assert sensor is not None and sensor.lux == 0.0


def test_iio_temperature_below_absolute_zero_is_no_reading(tmp_path: Path) -> None:
    b = Board()
    temp = "devices/platform/soc/fe804000.i2c/i2c-1/1-0076/iio:device1"
    b.attrs(temp, {"name": "bme280", "in_temp_input": -300000})
    b.link("bus/iio/devices/iio:device1", temp)
    assert iio.read_sensor(Sysfs(b.write(tmp_path)), "iio:device1") is None


def test_thermal_invalid_trips_and_temperatures_below_absolute_zero(tmp_path: Path) -> None:
    """The kernel shows a trip it has no temperature for as THERMAL_TEMP_INVALID, -274000
    (include/linux/thermal.h; iwlwifi and ACPI zones list several): they were listed as
    trips at -274 °C. A zone reading below absolute zero is no reading either."""
    b = Board()
    b.thermal(0, "iwlwifi_1", 41000, [(-274000, "passive"), (-274000, "passive")])
    b.thermal(1, "acpitz", 27800, [(-274000, "hot"), (105000, "critical")])
    b.thermal(2, "broken", -274000)
    zones = {z.type: z for z in thermal.discover_zones(Sysfs(b.write(tmp_path)))}
    assert zones["iwlwifi_1"].trips == () and zones["iwlwifi_1"].celsius == 41.0
    assert zones["acpitz"].trips == (thermal.Trip(105000, "critical"),)
    assert zones["broken"].temp_mc is None and zones["broken"].celsius is None


@pytest.mark.parametrize("capacity", [-1, 101, 255, "N/A"])
def test_battery_capacity_outside_0_to_100_is_no_reading(tmp_path: Path,
                                                         capacity: str | int) -> None:
    """sysfs-class-power: capacity is 0 - 100. A fuel gauge that is not calibrated yet can
    print anything else; -1 % would hold a battery_below rule (low-battery profile) on."""
    b = Board()
    b.power_supply("devices/platform/soc/battery", "battery",
                   {"type": "Battery", "status": "Discharging", "capacity": capacity})
    (bat,) = supply.discover_supplies(Sysfs(b.write(tmp_path)))
    assert bat.capacity_percent is None


def test_energy_counter_that_runs_backwards_is_no_power(tmp_path: Path) -> None:
    """Without max_energy_range_uj a counter that went back (a reset on resume, a counter
    reloaded) cannot be told from a wrap: it gave negative watts."""
    assert meters.average_watts(5_000_000, 10.0, 1_000_000, 12.0, None) is None
    assert meters.average_watts(1_000_000, 10.0, 5_000_000, 12.0, None) == pytest.approx(2.0)


def test_zones_of_one_type_report_the_hottest(tmp_path: Path) -> None:
    """x86 machines list several `acpitz` zones: the one read last hid a hotter one from
    the rules, which key temperatures by zone type."""
    b = Board()
    b.thermal(0, "acpitz", 91000)
    b.thermal(1, "acpitz", 27800)
    b.thermal(2, "x86_pkg_temp", 55000)
    inputs = InputReader(Sysfs(b.write(tmp_path)), {}).read(0.0)
    assert inputs.temps == {"acpitz": 91.0, "x86_pkg_temp": 55.0}


def test_board_watts_from_rails_count_every_chip_and_no_negative_rail(tmp_path: Path) -> None:
    """With no input rail the board's watts are the rails' sum. Two unlabelled ina226 both
    named "ina226:1" counted once, and a rail reading below 0 W (noise at no load, a shunt
    wired the other way round) made the sum low or negative."""
    b = Board()
    for n, (addr, uw) in enumerate((("1-0040", 4_000_000), ("1-0041", 2_500_000),
                                    ("1-0044", -300_000))):
        dev = f"devices/platform/soc/fe804000.i2c/i2c-1/{addr}"
        b.device(dev, bus="i2c", driver="ina2xx")
        b.hwmon(dev, n + 2, {"name": "ina226", "in1_input": 5000, "power1_input": uw})
    inputs = InputReader(Sysfs(b.write(tmp_path)), {}).read(0.0)
    assert inputs.meter_source == "hwmon rails"
    assert inputs.meter_w == pytest.approx(6.5)
