"""A PIR that stops reading while its output is high (its GPIO unexported, a USB GPIO
expander unplugged, EIO, a read that hangs) counts as its output gone low: someone around
holds sensors.pir_hold_s past its last high reading, not until a restart, and its status
shows why. The hanging read is a real FIFO in place of the GPIO value (as in
tests/test_slow_sensors.py)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.test_pir_hold import pir_daemon
from tests.test_sensors import Recorder, Tree, watch, write_whole
from tests.test_slow_sensors import Stuck
from wattgate.daemon.sensors import STUCK_S

StartDaemon = Callable[..., DaemonProcess]


def status_of(daemon: DaemonProcess) -> dict[str, Any]:
    with daemon.connect() as client:
        return client.request("status")


def test_a_pir_gone_while_high_lets_the_board_idle_after_the_hold(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    daemon, gpio = pir_daemon(start_daemon, tmp_path, cooldown_s=1.0)

    def wait_for(wanted: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = status_of(daemon)
            if st["power"]["activity"]["state"] == wanted:
                return st
            assert time.monotonic() < deadline, (f"never {wanted}", st, daemon.log()[-2000:])
            time.sleep(0.1)

    wait_for("idle")
    write_whole(gpio / "value", "1\n")  # someone walks in
    wait_for("active")
    shutil.rmtree(gpio)  # the GPIO is unexported while the output is high
    pir = wait_for("idle")["sensors"]["pir"]
    assert pir["error"] == "cannot be read"
    assert (pir["active"], pir["holding"], pir["triggers"]) == (False, False, 1)
    assert daemon.stop() == 0


def test_a_pir_that_reads_again_high_after_failing_is_a_new_trigger(tmp_path: Path) -> None:
    """Someone may have come while it could not be read: the pipeline is woken."""
    tree = Tree(tmp_path / "sys")
    path = tree.gpio(0)
    rec = Recorder()
    sensors = watch(tree, rec, light="none", pir=path, pir_hold_s=10.0)
    sensors.poll(0.0, 1000.0)
    tree.gpio(1)
    sensors.poll(1.0, 1001.0)
    shutil.rmtree(tree.root / "class/gpio/gpio17")
    sensors.poll(2.0, 1002.0)
    assert sensors.someone_around(10.9)
    assert not sensors.someone_around(11.0)  # pir_hold_s after the last high reading
    tree.gpio(1)
    sensors.poll(20.0, 1020.0)
    assert rec.pir == [1001.0, 1020.0]
    assert sensors.someone_around(40.0)
    assert "error" not in sensors.status(40.0)["pir"]


def test_a_pir_read_that_hangs_counts_as_low_after_stuck_s(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "sys")
    path = tree.gpio(0)
    rec = Recorder()
    hold_s = 1.0
    sensors = watch(tree, rec, light="none", pir=path, pir_poll_s=0.02, pir_hold_s=hold_s)
    sensors.poll(time.monotonic(), time.time())  # read low first: the high next is a trigger
    sensors.start()
    stuck = None
    try:
        tree.gpio(1)
        assert rec.seen.wait(20), "no PIR trigger"
        stuck = Stuck(tree.root / "class/gpio/gpio17/value")  # the next read hangs
        stuck.wait_for_reader()
        assert sensors.someone_around(time.monotonic())  # not stuck yet: still high
        later = time.monotonic() + STUCK_S + hold_s  # past STUCK_S and the hold
        assert not sensors.someone_around(later)
        pir = sensors.status(later)["pir"]
        assert (pir["active"], pir["holding"], pir["error"]) == (False, False, "no answer")
    finally:
        # Stopped before the read is answered: the answer is then dropped, where a watch
        # still running read the FIFO again, with no writer left, and hung for good.
        sensors.stop(timeout=0.05)
        if stuck is not None:
            stuck.release("1\n")
        sensors.stop(timeout=30)
    assert len(rec.pir) == 1
