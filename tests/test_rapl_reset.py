"""RAPL counters that restart: a zone registered again (driver reload, resume) reads near 0,
or with another max_energy_range_uj. Counted as a wrap, it gave one tick of kilowatts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_as
from tests.fixtures.boards import materialize
from tests.test_udev_rule import _user
from wattgate.daemon import power_inputs
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


PACKAGE = "devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"


def test_an_unreadable_psys_counter_falls_back_to_the_package_not_the_battery(
    reachable_tmp: Path,
) -> None:
    """Since Linux 5.10 (CVE-2020-8694) energy_uj is root's alone, mode 0400
    (drivers/powercap/powercap_sys.c). With a grant on the package zone and none on psys, the
    daemon's user reads package-0 and gets EACCES from psys: the psys zone was picked because
    it exists, its counter read None, and the discharging battery's 7.3 W stood in while the
    package counter was there to read. Run as another user, for the kernel's own EACCES."""
    root = materialize("intel-mtl", reachable_tmp / "sys")
    user = _user()
    for path in root.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o444)
    (root / PSYS / "energy_uj").chmod(0o400)  # as the kernel makes it
    package = root / PACKAGE
    os.chown(package, user.pw_uid, user.pw_gid)  # the grant: the daemon's, read only
    package.chmod(0o400)

    def measure() -> str:
        # a forked child has none of the parent's threads: a pool of its own to read on
        power_inputs._WORKERS = power_inputs._Workers(power_inputs.WORKERS)
        reader = InputReader(Sysfs(root), {})
        first = reader.read(10.0)
        package.chmod(0o600)  # the test, as the owner, advances the counter by 5 J
        package.write_text(f"{int(package.read_text()) + 5_000_000}\n")
        package.chmod(0o400)
        second = reader.read(11.0)
        return f"{first.meter_source} | {second.meter_source} {second.meter_w}"

    assert run_as(user.pw_uid, user.pw_gid, measure) == "None | RAPL package-0 5.0"
