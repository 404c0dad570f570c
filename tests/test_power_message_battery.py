"""What the battery rules judge, in `power` messages as in `status` (docs/protocol.md): a
client following the power topic sees the board go on battery and the charge the rules act
on, without polling `status`. Real daemons on fake boards: intel-mtl (BAT0 discharging at
76 %, AC offline) and rk3588 (a DC jack: no power_supply node at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize
from tests.test_power_message_lux import _first_power_message

StartDaemon = Callable[..., DaemonProcess]


def test_a_power_message_says_on_battery_and_the_charge_the_rules_judge(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = materialize("intel-mtl", tmp_path / "board")
    message = _first_power_message(start_daemon, root, "none")
    assert message["on_battery"] is True
    assert message["battery_percent"] == 76.0


def test_a_board_without_a_battery_is_on_mains_in_the_power_message(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = materialize("rk3588", tmp_path / "board")
    message = _first_power_message(start_daemon, root, "none")
    assert message["on_battery"] is False
    assert "battery_percent" not in message
