"""A board with no battery cannot be on battery: an RK3588 or i.MX8MP on a DC barrel jack
lists no power_supply at all, and its "on mains" rules must hold. What stays unknown is a
battery that may be there but cannot be told: one whose type does not read, one seen before
that went away, one whose read has not answered. Fake board trees, real files, and a real
daemon."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize
from tests.test_battery_unknown import FailingReads
from tests.test_slow_sensors import Stuck
from wattgate.daemon.power_inputs import InputReader
from wattgate.drivers import supply
from wattgate.drivers.sysfs import Sysfs

BAT0 = "class/power_supply/BAT0"
AC = "class/power_supply/AC"


@pytest.mark.parametrize("board", ["rk3588", "imx8mp"])
def test_a_board_without_any_power_supply_is_not_on_battery(tmp_path: Path, board: str) -> None:
    fs = Sysfs(materialize(board, tmp_path / "sys"))
    assert supply.discover_supplies(fs) == []
    assert supply.on_battery([]) is False
    assert InputReader(fs, {}).read(0.0).readings.on_battery is False


def test_mains_that_does_not_say_online_and_no_battery_is_not_on_battery(tmp_path: Path) -> None:
    """No battery to run on: whatever the mains node says, or fails to say."""
    root = materialize("intel-mtl", tmp_path / "sys")
    (root / BAT0).unlink()
    io = FailingReads()
    io.failing[os.path.realpath(root / AC / "online")] = errno.EIO
    assert supply.on_battery(supply.discover_supplies(Sysfs(root, io))) is False


def test_a_supply_whose_type_does_not_read_may_be_the_battery(tmp_path: Path) -> None:
    root = materialize("intel-mtl", tmp_path / "sys")
    (root / AC).unlink()
    io = FailingReads()
    io.failing[os.path.realpath(root / BAT0 / "type")] = errno.EIO
    supplies = supply.discover_supplies(Sysfs(root, io))
    assert [s.is_battery for s in supplies] == [False]
    assert supply.on_battery(supplies) is None


def test_a_battery_whose_status_tells_nothing_stays_unknown(tmp_path: Path) -> None:
    root = materialize("intel-mtl", tmp_path / "sys")
    (root / AC).unlink()
    (root / BAT0 / "status").write_text("Unknown\n")
    assert supply.on_battery(supply.discover_supplies(Sysfs(root))) is None


def test_a_battery_that_went_away_is_unknown_not_absent(tmp_path: Path) -> None:
    """A fuel gauge unbound on a battery-only board: once seen, its absence is no proof
    that the board runs on mains."""
    root = materialize("intel-mtl", tmp_path / "sys")
    (root / AC).unlink()
    reader = InputReader(Sysfs(root), {})
    assert reader.read(0.0).readings.on_battery is True
    (root / BAT0).unlink()
    assert reader.read(1.0).readings.on_battery is None


def test_a_battery_whose_first_read_has_not_answered_is_unknown(tmp_path: Path) -> None:
    """An ACPI battery behind an embedded controller that does not answer yet."""
    root = materialize("intel-mtl", tmp_path / "sys")
    (root / AC).unlink()
    stuck = Stuck((root / BAT0 / "type").resolve())
    try:
        reader = InputReader(Sysfs(root), {})
        assert reader.read(0.0).readings.on_battery is None
        stuck.wait_for_reader()
        assert reader.read(1.0).readings.on_battery is None
    finally:
        stuck.release("Battery\n")


def test_the_daemon_on_a_board_without_battery_holds_the_on_mains_rule(
    start_daemon: Any, tmp_path: Path
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    daemon: DaemonProcess = start_daemon(power={"sysfs_root": str(root)},
                                         rules=[{"on_battery": False, "profile": "performance"}])
    with daemon.connect() as client:
        deadline = time.monotonic() + 30.0
        while True:
            power = client.request("status")["power"]
            if power["profile"]["name"] == "performance" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert power["profile"]["name"] == "performance"
        assert power["profile"]["reason"] == "on mains"
        assert power["on_battery"] is False and "battery" not in power
    assert daemon.stop() == 0
