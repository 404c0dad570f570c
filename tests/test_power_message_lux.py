"""The light reading in `power` messages, as config.toml's [sensors] promises ("appears in
`status` and `power` messages"): a client subscribed to `power` sees the light level
without polling `status`. A real daemon on a fake RK3588 sysfs tree with a tsl2591 laid
out as its driver does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize

StartDaemon = Callable[..., DaemonProcess]


def _first_power_message(start_daemon: StartDaemon, root: Path, light: str) -> dict[str, Any]:
    daemon = start_daemon(power={"sysfs_root": str(root)}, camera={"source": "synthetic:empty"},
                          sensors={"light": light})
    with daemon.connect() as client:
        client.request("subscribe", topics=["power"])
        client.settimeout(20.0)
        message = next(m for m in client.messages() if m.get("class") == "power")
    assert daemon.stop() == 0
    return message


def _board_with_light_sensor(tmp_path: Path) -> Path:
    root = materialize("rk3588", tmp_path / "board")
    device = root / "bus/iio/devices/iio:device5"
    device.mkdir(parents=True)
    (device / "name").write_text("tsl2591\n")
    (device / "in_illuminance_input").write_text("321.5\n")
    return root


def test_a_power_message_carries_the_light_reading(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    message = _first_power_message(start_daemon, _board_with_light_sensor(tmp_path), "auto")
    assert message["lux"] == 321.5


def test_without_a_light_reading_a_power_message_has_no_lux(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    message = _first_power_message(start_daemon, _board_with_light_sensor(tmp_path), "none")
    assert "lux" not in message and "profile" in message
