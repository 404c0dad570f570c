"""Frequency floors and ceilings (drivers/limits.py), as cpufreq and devfreq write them on
an RK3588 tree: snapped to the listed levels, and in an order the kernel takes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.fixtures.boards import materialize
from wattgate.drivers import cpufreq, devfreq
from wattgate.drivers.limits import snap
from wattgate.drivers.sysfs import Sysfs, Writer

TABLE = (300, 600, 900)


@pytest.mark.parametrize(("value", "upward", "snapped"), [
    (600, True, 600), (600, False, 600),  # a listed level stays
    (400, True, 600), (400, False, 300),  # a floor rounds up, a ceiling down
    (100, False, 300), (100, True, 300),  # below the table: its lowest
    (1000, True, 900), (1000, False, 900),  # above it: its highest
])
def test_snap_never_loosens_a_limit_within_the_table(value: int, upward: bool,
                                                     snapped: int) -> None:
    assert snap(TABLE, value, upward=upward) == snapped


def test_without_a_table_the_value_stays() -> None:
    assert snap((), 123, upward=True) == snap((), 123, upward=False) == 123


class Recorder:
    """A Writer that stores through the real one and notes which attribute it wrote."""

    def __init__(self, fs: Sysfs) -> None:
        self._fs = fs
        self.order: list[str] = []

    @property
    def fs(self) -> Sysfs:
        return self._fs

    def write(self, attribute: str, value: str, *, restore: Optional[str] = None,
              always: bool = False) -> bool:
        self.order.append(attribute.rsplit("/", 1)[1])
        return self._fs.write(attribute, value, always=always)


def cpu_limits(fs: Sysfs, w: Writer, floor: Optional[int], ceiling: Optional[int]) -> None:
    policy = cpufreq.read_policy(fs, "policy0")
    cpufreq.set_limits(w, policy, min_khz=floor, max_khz=ceiling)


def npu_limits(fs: Sysfs, w: Writer, floor: Optional[int], ceiling: Optional[int]) -> None:
    npu = devfreq.read_devfreq(fs, "fdab0000.npu")
    devfreq.set_limits(w, npu, min_hz=floor, max_hz=ceiling)


SetLimits = Callable[[Sysfs, Writer, Optional[int], Optional[int]], None]
# (set_limits, a low ceiling, a floor above it with a high ceiling, the min and max names)
DEVICES: dict[str, tuple[SetLimits, int, tuple[int, int], tuple[str, str]]] = {
    "cpufreq": (cpu_limits, 600000, (1416000, 1800000),
                ("scaling_min_freq", "scaling_max_freq")),
    "devfreq": (npu_limits, 400000000, (800000000, 1000000000), ("min_freq", "max_freq")),
}


@pytest.mark.parametrize("device", DEVICES)
def test_raising_the_floor_above_the_ceiling_writes_the_ceiling_first(
    device: str, tmp_path: Path
) -> None:
    set_limits, low, (floor, ceiling), (min_name, max_name) = DEVICES[device]
    fs = Sysfs(materialize("rk3588", tmp_path))
    set_limits(fs, fs, None, low)
    recorder = Recorder(fs)
    set_limits(fs, recorder, floor, ceiling)
    assert recorder.order == [max_name, min_name]
    lowering = Recorder(fs)
    set_limits(fs, lowering, floor // 2, ceiling)
    assert lowering.order == [min_name, max_name]  # the floor is under the ceiling: as asked
