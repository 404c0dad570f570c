"""The board's input rail (VDD_IN, VIN): a reading below 0 W is a bad reading.

The summed rails clamp each rail at 0 W, but a negative VDD_IN (a shunt wired the other way
round, a misread register) went out as the board's watts, below zero."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers.sysfs import Sysfs

VDD_IN_CURR = "class/hwmon/hwmon1/curr1_input"


def test_a_negative_input_rail_is_no_reading(tmp_path: Path) -> None:
    root = materialize("jetson-orin-nano", tmp_path / "sys")
    reader = InputReader(Sysfs(root), {})
    inputs = reader.read(0.0)
    assert inputs.meter_source == "hwmon VDD_IN"
    assert inputs.meter_w == pytest.approx(5.072 * 1.023)
    (root / VDD_IN_CURR).write_text("-1023\n")
    inputs = reader.read(1.0)
    assert (inputs.meter_w, inputs.meter_source) == (None, None)
