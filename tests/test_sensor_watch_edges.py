"""The sensor watch across a reload, which stops one watch and starts another: a stopped
watch says nothing more, whatever its reads were doing, and a new watch does not take a
PIR already high for someone arriving. Sensors are files in a fake sysfs tree laid out as
their drivers do; a read that hangs is a real FIFO (tests/test_slow_sensors.py)."""

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


def test_a_new_watch_takes_a_pir_already_high_as_someone_already_there(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "sys")
    path = tree.gpio(0)
    rec = Recorder()
    settings = SensorSettings(light="none", pir=path, pir_hold_s=5.0)
    old = SensorWatch(tree.fs, settings, rec.on_lighting, rec.on_pir)
    old.poll(0.0, 100.0)
    tree.gpio(1)  # someone walks in
    old.poll(1.0, 101.0)
    assert rec.pir == [101.0]
    # A reload (say, light_suppress_s edited) replaces the watch while they are still there.
    new = SensorWatch(tree.fs, SensorSettings(light="none", pir=path, pir_hold_s=5.0,
                                              light_suppress_s=5.0),
                      rec.on_lighting, rec.on_pir)
    new.poll(2.0, 102.0)
    new.poll(3.0, 103.0)
    assert rec.pir == [101.0]
    pir = new.status(now=3.0)["pir"]
    assert pir["active"] and pir["holding"]
    tree.gpio(0)  # they leave; the next one to come is a trigger
    new.poll(4.0, 104.0)
    assert new.status(now=7.9)["pir"]["holding"]  # held hold_s after last seen high (3.0)
    assert not new.status(now=8.0)["pir"]["holding"]
    tree.gpio(1)
    new.poll(10.0, 110.0)
    assert rec.pir == [101.0, 110.0]

