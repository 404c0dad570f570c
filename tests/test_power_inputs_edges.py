"""The power controller's readings where real boards make them hard: reads that hang or
are slow (an ACPI embedded controller, an I2C bus, a one-shot conversion), thermal zones
that share a type, INA3221 channels that are not connected, Jetson input rails, and
machines with two batteries.

A read that hangs is a real FIFO (tests.test_slow_sensors.Stuck): opening and reading it
blocks as a driver's show() does, until the test answers it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from tests.test_slow_sensors import Stuck
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers.sysfs import Sysfs

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
