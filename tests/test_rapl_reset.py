"""RAPL counters that restart: a zone registered again (driver reload, resume) reads near 0,
or with another max_energy_range_uj. Counted as a wrap, it gave one tick of kilowatts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers import meters
from wattgate.drivers.sysfs import Sysfs

PSYS = "class/powercap/intel-rapl:1"  # the zone the reader measures the board by


def _reader(tmp_path: Path) -> tuple[InputReader, Path]:
    root = materialize("intel-mtl", tmp_path / "sys")
    return InputReader(Sysfs(root), {}), root


def _set(root: Path, attribute: str, value: int) -> None:
    (root / PSYS / attribute).write_text(f"{value}\n")


def test_a_counter_back_near_zero_is_no_reading(tmp_path: Path) -> None:
    reader, root = _reader(tmp_path)
    assert reader.read(10.0).meter_w is None  # the first sample
    _set(root, "energy_uj", 3_000_000)  # zone registered again: counting from 0
    assert reader.read(11.0).meter_w is None
    _set(root, "energy_uj", 8_000_000)
    inputs = reader.read(12.0)
    assert inputs.meter_source == "RAPL psys" and inputs.meter_w == pytest.approx(5.0)


def test_a_new_energy_range_is_no_reading(tmp_path: Path) -> None:
    reader, root = _reader(tmp_path)
    reader.read(10.0)
    _set(root, "max_energy_range_uj", 65_532_610_987)
    _set(root, "energy_uj", 1_000_000)
    assert reader.read(11.0).meter_w is None


def test_a_real_wrap_still_reads(tmp_path: Path) -> None:
    reader, root = _reader(tmp_path)
    top = int((root / PSYS / "max_energy_range_uj").read_text())
    _set(root, "energy_uj", top - 2_000_000)
    reader.read(10.0)
    _set(root, "energy_uj", 4_000_000)
    assert reader.read(11.0).meter_w == pytest.approx(6.0)


def test_a_wrap_beyond_any_rapl_power_is_a_reset() -> None:
    top = 262_143_328_850
    assert meters.average_watts(91_200_044_123, 10.0, 3_000_000, 11.0, top) is None
    assert meters.average_watts(top - 1_000_000, 10.0, 4_000_000, 12.0, top) == (
        pytest.approx(2.5))
