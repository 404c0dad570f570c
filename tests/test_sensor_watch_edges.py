"""The sensor watch across a reload, which stops one watch and starts another: a stopped
watch says nothing more, whatever its reads were doing. Sensors are files in a fake sysfs
tree laid out as their drivers do; a read that hangs is a real FIFO
(tests/test_slow_sensors.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.test_sensors import Recorder, Tree
from tests.test_slow_sensors import Stuck
from wattgate.daemon.sensors import SensorSettings, SensorWatch


def ended(watch: SensorWatch) -> None:
    """Wait, generously, until the watch's threads have ended."""
    for thread in watch._threads:
        thread.join(30)
        assert not thread.is_alive(), f"{thread.name} did not end"


def until(condition: Callable[[], bool]) -> None:
    """Wait, generously, until `condition()` holds."""
    deadline = time.monotonic() + 30.0
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_light_read_answered_after_stop_changes_nothing(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "sys")
    tree.tsl2591(10.0)
    rec = Recorder()
    old = SensorWatch(tree.fs, SensorSettings(light_poll_s=0.05), rec.on_lighting, rec.on_pir)
    old.start()
    until(lambda: old.status()["light"].get("lux") == 10.0)  # the light before: 10 lx
    stuck = Stuck(tree.root / "bus/iio/devices/iio:device2/in_illuminance_input")
    try:
        stuck.wait_for_reader()
        old.stop(timeout=0.05)  # gives up on the hung read, as a reload does after its timeout
        stuck.release("900\n")  # the light was switched on meanwhile: a jump from 10 lx
        ended(old)
    finally:
        stuck.release("")
    assert rec.lighting == []
    status = old.status()["light"]
    assert status["changes"] == 0 and status["lux"] == 10.0
    assert not old.motion_suppressed(float("inf"))


def test_a_pir_read_answered_after_stop_is_no_trigger(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "sys")
    path = tree.gpio(0)
    rec = Recorder()
    old = SensorWatch(tree.fs, SensorSettings(light="none", pir=path, pir_poll_s=0.02),
                      rec.on_lighting, rec.on_pir)
    old.start()
    stuck = Stuck(tree.root / "class/gpio/gpio17/value")
    try:
        stuck.wait_for_reader()
        old.stop(timeout=0.05)
        stuck.release("1\n")
        ended(old)
    finally:
        stuck.release("")
    assert rec.pir == []
    assert old.status()["pir"]["triggers"] == 0

