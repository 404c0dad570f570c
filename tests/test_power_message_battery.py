"""What the battery rules judge, in `power` messages as in `status` (docs/protocol.md): a
client following the power topic sees the board go on battery and the charge the rules act
on, without polling `status`. Real daemons on fake boards: intel-mtl (BAT0 discharging at
76 %, AC offline) and rk3588 (a DC jack: no power_supply node at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize
from tests.test_power_message_lux import _first_power_message

StartDaemon = Callable[..., DaemonProcess]


@pytest.mark.parametrize(("board", "on_battery", "percent"), [
    ("intel-mtl", True, 76.0),  # BAT0 discharging, AC offline
    ("rk3588", False, None),  # a DC jack: on mains, no charge to tell
])
def test_a_power_message_says_what_the_battery_rules_judge(
    start_daemon: StartDaemon, tmp_path: Path, board: str, on_battery: bool,
    percent: Optional[float],
) -> None:
    message = _first_power_message(start_daemon, materialize(board, tmp_path / "board"), "none")
    assert message["on_battery"] is on_battery
    assert message.get("battery_percent") == percent
