"""sensors.pir_hold_s: "a trigger counts as someone around for this many seconds after the
output clears". The daemon acted on the rising edge alone, so with someone standing in
view the clocks dropped power.cooldown_s after they arrived. A real daemon on a fake RK3588
whose GPIO value file is the PIR."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize
from tests.test_camera_watch import wait_for
from tests.test_sensors import write_whole

StartDaemon = Callable[..., DaemonProcess]


def activity(daemon: DaemonProcess) -> Any:
    with daemon.connect() as client:
        return client.request("status")["power"]["activity"]["state"]


def status_of(daemon: DaemonProcess) -> Any:
    with daemon.connect() as client:
        st = client.request("status")
        return st["power"], st.get("sensors"), daemon.log()[-2000:]


def wait_for_activity(daemon: DaemonProcess, wanted: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while activity(daemon) != wanted:
        assert time.monotonic() < deadline, (f"activity never became {wanted}", status_of(daemon))
        time.sleep(0.1)


def pir_daemon(start_daemon: StartDaemon, tmp_path: Path,
               cooldown_s: float) -> tuple[DaemonProcess, Path]:
    """A daemon on a fake RK3588 whose GPIO 17 is the PIR (output low), held 1 s; and the
    GPIO's directory, whose value file the test writes as the PIR would."""
    root = materialize("rk3588", tmp_path / "board")
    gpio = root / "class/gpio/gpio17"
    gpio.mkdir(parents=True)
    write_whole(gpio / "value", "1\n")  # high first: read_high_then_low
    daemon = start_daemon(
        power={"sysfs_root": str(root), "cooldown_s": cooldown_s},
        camera={"source": "synthetic:empty"},
        sensors={"light": "none", "pir": "/sys/class/gpio/gpio17/value",
                 "pir_poll_s": 0.05, "pir_hold_s": 1.0},
    )

    def pir_active() -> bool:
        with daemon.connect() as client:
            return bool(client.request("status")["sensors"]["pir"]["active"])

    read_high_then_low(gpio / "value", pir_active)
    return daemon, gpio


def read_high_then_low(value: Path, active: Callable[[], bool]) -> None:
    """A PIR whose `value` was written high before its watch began: seen read high (the
    first read, someone already there, which status shows), then set low and seen read
    low, so that the next raise is a trigger, not what a first read finds."""
    wait_for(active, what="the PIR's first read")
    write_whole(value, "0\n")
    wait_for(lambda: not active(), what="the PIR read low")


def test_someone_in_front_of_the_pir_keeps_the_board_awake_until_the_hold_ends(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    cooldown_s = 1.0
    daemon, gpio = pir_daemon(start_daemon, tmp_path, cooldown_s)
    wait_for_activity(daemon, "idle")
    write_whole(gpio / "value", "1\n")  # someone walks in, and stays
    wait_for_activity(daemon, "active")
    stays_until = time.monotonic() + 4 * cooldown_s
    while time.monotonic() < stays_until:
        assert activity(daemon) != "idle"
        time.sleep(0.2)
    write_whole(gpio / "value", "0\n")  # they leave: idle after the hold and the cooldown
    wait_for_activity(daemon, "idle")
    assert daemon.stop() == 0
