"""The power controller's readings where real boards make them hard: reads that hang or
are slow (an ACPI embedded controller, an I2C bus, a one-shot conversion), thermal zones
that share a type, INA3221 channels that are not connected, Jetson input rails, and
machines with two batteries.

A read that hangs is a real FIFO (tests.test_slow_sensors.Stuck): opening and reading it
blocks as a driver's show() does, until the test answers it."""

from __future__ import annotations

import errno
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boards import Board, materialize
from tests.test_battery_unknown import FailingReads
from tests.test_slow_sensors import Stuck
from wattgate.config import RuleConfig
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers.sysfs import OsIO, Sysfs
from wattgate.policies.rules import RuleEngine

MTL_PKG = "class/thermal/thermal_zone3/temp"  # intel-mtl: x86_pkg_temp, 52 °C
# intel-mtl's sources behind the ACPI embedded controller, which can stop answering
EC_READS = ("class/power_supply/AC/online", "class/power_supply/BAT0/online",
            "class/thermal/thermal_zone0/temp", "class/thermal/thermal_zone1/temp")


@pytest.fixture
def stuck() -> Iterator[list[Stuck]]:
    """FIFOs made by the test; each is answered at the end, so no read stays blocked."""
    fifos: list[Stuck] = []
    yield fifos
    for fifo in fifos:
        fifo.release("1\n")


def read_until(reader: InputReader, wanted: str, check: object, timeout: float = 30.0) -> None:
    """Ticks until `check(inputs)` holds, with a generous timeout (the machine is shared)."""
    deadline = time.monotonic() + timeout
    t = 100.0
    while True:
        inputs = reader.read(t)
        if check(inputs):  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"never: {wanted}; last temps {inputs.temps}"
        t += 1.0
        time.sleep(0.05)


def test_four_reads_that_hang_hold_up_no_other_source(tmp_path: Path,
                                                      stuck: list[Stuck]) -> None:
    """An embedded controller that stops answering hangs four reads at once (AC, BAT0 and
    two ACPI zones). They took every read thread, and the CPU package zone was never read
    again: a thermal rule on it could no longer trip."""
    root = materialize("intel-mtl", tmp_path / "sys")
    reader = InputReader(Sysfs(root), {})
    assert reader.read(0.0).temps["x86_pkg_temp"] == 52.0
    stuck.extend(Stuck(root / path) for path in EC_READS)
    for t in (1.0, 2.0, 3.0):
        reader.read(t)
    for fifo in stuck:
        fifo.wait_for_reader()  # all four are in a read now
    (root / MTL_PKG).write_text("99000\n")  # the CPU overheats
    read_until(reader, "x86_pkg_temp at 99 °C",
               lambda inputs: inputs.temps.get("x86_pkg_temp") == 99.0)


class SlowZone(OsIO):
    """The first read of one attribute takes `seconds`, as a sensor's one-shot conversion
    does (a delay a plain file cannot have, so it is added here); the later ones last until
    `release` is set, so what a tick finds running does not depend on the machine's speed.
    `finished` counts the reads done."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path, self.seconds = str(path), seconds
        self.finished = 0
        self.release = threading.Event()

    def read_text(self, path: Path) -> str:
        text = super().read_text(path)
        if str(path) == self.path:
            if self.finished == 0:
                time.sleep(self.seconds)
            else:
                self.release.wait(30.0)
            self.finished += 1
        return text


def test_the_tick_does_not_wait_for_a_read_known_to_be_slow(tmp_path: Path) -> None:
    """The tick runs on the daemon's event loop. A zone that took 0.4 s a read (an ACPI
    battery takes as long) was waited for on every tick, the loop stopped meanwhile. Known
    to be slow, it is read in the background: its answer comes a tick late, and while its
    next read runs the one before stands in, marked stale."""
    root = materialize("intel-mtl", tmp_path / "sys")
    io = SlowZone(root / "class/thermal/thermal_zone2/temp", 0.4)  # TCPU, 51.05 °C
    reader = InputReader(Sysfs(root, io), {})
    reader.read(0.0)
    deadline = time.monotonic() + 30.0
    # `finished` counts the read just before it returns; its answer is there for the tick
    # once the read's future is done, a moment later (the reader's private state is looked
    # at only to wait for that moment)
    while io.finished < 1 or not all(f.done() for f in reader._sources._running.values()):
        assert time.monotonic() < deadline, "the zone was never read"
        time.sleep(0.01)
    inputs = reader.read(1.0)
    assert io.finished == 1, "the tick waited for the slow zone's next read"
    assert inputs.temps["TCPU"] == 51.05 and "zone:thermal_zone2" not in inputs.stale
    inputs = reader.read(2.0)  # its read of tick 1 still runs: tick 1's answer stands in
    io.release.set()
    assert inputs.temps["TCPU"] == 51.05 and "zone:thermal_zone2" in inputs.stale


def test_a_hot_zone_that_does_not_answer_keeps_its_rule_though_a_zone_of_its_type_reads(
    tmp_path: Path,
) -> None:
    """Many x86 boards have several acpitz zones. The hot one answering EAGAIN (a sensor
    not ready), the cooler one of its type stood in for it, and the rule the hot one had
    tripped let go, where a zone that cannot be read holds it."""
    root = materialize("intel-mtl", tmp_path / "sys")
    zones = root / "class/thermal"
    (zones / "thermal_zone1/type").write_text("acpitz\n")  # a second ACPI zone
    (zones / "thermal_zone0/temp").write_text("92000\n")
    (zones / "thermal_zone1/temp").write_text("40000\n")
    io = FailingReads()
    reader = InputReader(Sysfs(root, io), {})
    rules = RuleEngine([RuleConfig(temp_above_c=85.0, zone="acpitz", profile="powersave")],
                       "balanced", {"balanced", "powersave"})
    assert rules.evaluate(reader.read(0.0).readings)[0].profile == "powersave"
    io.failing[str((zones / "thermal_zone0/temp").resolve())] = errno.EAGAIN
    inputs = reader.read(1.0)
    assert inputs.temps["acpitz"] == 92.0  # the hottest known
    assert rules.evaluate(inputs.readings)[0].profile == "powersave"
    del io.failing[str((zones / "thermal_zone0/temp").resolve())]
    (zones / "thermal_zone0/temp").write_text("41000\n")  # it answers again, cool
    inputs = reader.read(2.0)
    assert inputs.temps["acpitz"] == 41.0
    assert rules.evaluate(inputs.readings)[0].profile == "balanced"


AGX_I2C = "devices/platform/bus@0/c240000.i2c/i2c-1"


def agx_orin_rails(b: Board) -> None:
    """The AGX Orin's two INA3221 (JetPack 5, hwmon): the second has channels 1 and 3 not
    connected ("NC" in the device tree), which the driver keeps disabled (in{N}_enable 0)
    and without a label."""
    chips: dict[tuple[str, int], dict[int, tuple[str, int, int] | None]] = {
        ("1-0040", 1): {1: ("VDD_GPU_SOC", 5072, 1023), 2: ("VDD_CPU_CV", 5064, 239),
                        3: ("VIN_SYS_5V0", 5064, 1319)},
        ("1-0041", 2): {1: None, 2: ("VDDQ_VDD2_1V8AO", 5000, 120), 3: None},
    }
    for (addr, index), channels in chips.items():
        dev = f"{AGX_I2C}/{addr}"
        b.device(dev, bus="i2c", driver="ina3221")
        values: dict[str, str | int] = {"name": "ina3221"}
        for ch, rail in channels.items():
            values[f"in{ch}_enable"] = 0 if rail is None else 1
            values[f"in{ch}_input"] = 0 if rail is None else rail[1]
            values[f"curr{ch}_input"] = 0 if rail is None else rail[2]
            if rail is not None:
                values[f"in{ch}_label"] = rail[0]
        b.hwmon(dev, index, values)


@pytest.mark.parametrize("enable_reads", [True, False])
def test_a_disabled_ina3221_channel_is_no_rail(tmp_path: Path, enable_reads: bool) -> None:
    """drivers/hwmon/ina3221.c answers ENODATA to in/curr of a disabled channel. Taken for
    a rail that failed its read, it left the AGX Orin with no measured watts on any tick.
    `enable_reads` False: a kernel without in{N}_enable, where only ENODATA tells."""
    b = Board()
    agx_orin_rails(b)
    root = b.write(tmp_path)
    io = FailingReads()
    nc = root / "class/hwmon/hwmon2"
    for ch in (1, 3):
        for kind in ("in", "curr"):
            io.failing[str((nc / f"{kind}{ch}_input").resolve())] = errno.ENODATA
        if not enable_reads:
            (nc / f"in{ch}_enable").unlink()
    reader = InputReader(Sysfs(root, io), {})
    for t in (0.0, 1.0):
        inputs = reader.read(t)
        assert inputs.meter_source == "hwmon rails"
        expected = 5.072 * 1.023 + 5.064 * 0.239 + 5.064 * 1.319 + 5.0 * 0.120
        assert inputs.meter_w == pytest.approx(expected)


def jetpack4_rails(b: Board, rails: dict[str, int]) -> None:
    """A JetPack 4 INA3221 under IIO (ina3221x): rail_name_N and in_power N _input, mW."""
    base = "devices/platform/7000c400.i2c/i2c-6/6-0040/iio:device0"
    values: dict[str, str | int] = {"name": "ina3221x"}
    for ch, (label, mw) in enumerate(rails.items()):
        values |= {f"rail_name_{ch}": label, f"in_power{ch}_input": mw,
                   f"in_voltage{ch}_input": 5000, f"in_current{ch}_input": mw // 5}
    b.attrs(base, values)
    b.link("bus/iio/devices/iio:device0", base)


@pytest.mark.parametrize("rails, source", [
    # the Jetson Nano: POM_5V_IN feeds the GPU and CPU rails
    ({"POM_5V_IN": 2479, "POM_5V_GPU": 0, "POM_5V_CPU": 374}, "hwmon POM_5V_IN"),
    # a rail named as the input though no name the daemon knows (Xavier NX's manual: 5V_IN)
    ({"VDD_CPU_GPU": 600, "5V_IN": 2479, "VDD_SOC": 700}, "hwmon 5V_IN"),
])
def test_the_input_rail_is_the_board_not_the_sum_with_the_rails_it_feeds(
    tmp_path: Path, rails: dict[str, int], source: str,
) -> None:
    """The Nano's input rail was not known as one: the board's watts were the sum of it
    and the rails it feeds, 2.853 W for 2.479 W."""
    b = Board()
    jetpack4_rails(b, rails)
    inputs = InputReader(Sysfs(b.write(tmp_path)), {}).read(0.0)
    assert (inputs.meter_w, inputs.meter_source) == (pytest.approx(2.479), source)


def intel_with_bat1(tmp_path: Path, first: dict[str, str], second: dict[str, str]) -> Path:
    """intel-mtl at tmp_path/sys with a second battery, BAT1 (a ThinkPad's removable one),
    made from BAT0 as the kernel lays it out; the two batteries' files set to `first` and
    `second`."""
    root = materialize("intel-mtl", tmp_path / "sys")
    supplies = root / "class/power_supply"
    bat0 = supplies.joinpath("BAT0").resolve()
    bat1 = bat0.parent / "BAT1"
    shutil.copytree(bat0, bat1, symlinks=True)
    (supplies / "BAT1").symlink_to(bat1)
    for battery, values in ((bat0, first), (bat1, second)):
        for name, text in values.items():
            (battery / name).write_text(text + "\n")
    return root


def two_batteries(tmp_path: Path, second: dict[str, str]) -> tuple[Path, FailingReads]:
    """intel-mtl with a second battery beside an idle BAT0 at 97 %, and RAPL not readable
    (energy_uj is root's since Linux 5.10), so the batteries are what measures the board."""
    root = intel_with_bat1(tmp_path, {"power_now": "0", "status": "Unknown", "capacity": "97",
                                      "energy_full": "57000000"}, second)
    io = FailingReads()
    for counter in root.glob("class/powercap/*/energy_uj"):
        io.failing[str(counter.resolve())] = errno.EACCES
    return root, io


def test_every_battery_counts_for_the_watts_and_the_percent(tmp_path: Path) -> None:
    """Only the first battery was looked at: with BAT1 the one in use, the board drew
    BAT0's 0 W and had BAT0's 97 % left."""
    root, io = two_batteries(tmp_path, {"power_now": "9300000", "capacity": "8",
                                        "status": "Discharging", "energy_full": "19000000"})
    reader = InputReader(Sysfs(root, io), {})
    reader.read(0.0)
    inputs = reader.read(1.0)
    assert (inputs.meter_w, inputs.meter_source) == (pytest.approx(9.3), "battery BAT0+BAT1")
    assert inputs.readings.on_battery is True
    # weighed by size: 97 % of 57 Wh and 8 % of 19 Wh
    assert inputs.readings.battery_percent == pytest.approx((97 * 57 + 8 * 19) / 76)


def test_batteries_of_unknown_size_count_alike(tmp_path: Path) -> None:
    root, io = two_batteries(tmp_path, {"capacity": "8"})
    (root / "class/power_supply/BAT1/energy_full").unlink()
    inputs = InputReader(Sysfs(root, io), {}).read(0.0)
    assert inputs.readings.battery_percent == pytest.approx((97 + 8) / 2)
