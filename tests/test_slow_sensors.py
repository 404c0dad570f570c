"""A sensor that does not answer (a hung I2C transfer, a light sensor's long one-shot
conversion) holds up nothing but itself. The slow attribute is a real FIFO: opening it for
reading blocks until a writer comes, as a read() blocks in a driver's show()."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from tests.test_sensors import Recorder, Tree
from wattgate.daemon.sensors import SensorSettings, SensorWatch


class Stuck:
    """A FIFO in place of an attribute. `wait_for_reader` returns once a reader is blocked
    on it, and keeps it blocked (the write end open, nothing written); `release(text)`
    answers it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: Optional[int] = None
        path.unlink(missing_ok=True)
        os.mkfifo(path)

    def wait_for_reader(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.fd is None:
            try:  # succeeds once a reader has it open: that reader now waits in read()
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                assert time.monotonic() < deadline, "nothing read the attribute"
                time.sleep(0.01)

    def release(self, text: str) -> None:
        if self.fd is not None:
            os.write(self.fd, text.encode())
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def stuck_light(tmp_path: Path) -> Iterator[tuple[Tree, Stuck]]:
    tree = Tree(tmp_path / "sys")
    tree.tsl2591(50.0)
    stuck = Stuck(tree.root / "bus/iio/devices/iio:device2/in_illuminance_input")
    yield tree, stuck
    stuck.release("50\n")  # let a reader still blocked go


def test_a_light_sensor_that_does_not_answer_does_not_hold_up_the_pir(
    stuck_light: tuple[Tree, Stuck]
) -> None:
    tree, stuck = stuck_light
    path = tree.gpio(0)
    rec = Recorder()
    sensors = SensorWatch(tree.fs, SensorSettings(pir=path, pir_poll_s=0.02, light_poll_s=0.05),
                          rec.on_lighting, rec.on_pir)
    sensors.start()
    try:
        stuck.wait_for_reader()
        tree.gpio(1)
        assert rec.seen.wait(20), "the PIR was not polled while the light sensor hung"
        assert len(rec.pir) == 1
        assert sensors.status()["pir"]["triggers"] == 1
    finally:
        stuck.release("50\n")
        sensors.stop(timeout=30)
    assert not any(t.name.startswith("wattgate-sensors") for t in threading.enumerate())


def test_a_light_sensor_that_does_not_answer_is_shown_as_such(
    stuck_light: tuple[Tree, Stuck]
) -> None:
    tree, stuck = stuck_light
    sensors = SensorWatch(tree.fs, SensorSettings(light_poll_s=0.05))
    reading = threading.Thread(target=sensors.poll, args=(100.0, 1000.0))
    reading.start()
    try:
        stuck.wait_for_reader()
        status = sensors.status(now=100.0)
        assert "error" not in status["light"]
        status = sensors.status(now=200.0)  # 100 s later, still reading
        assert status["light"]["error"] == "no answer"
    finally:
        stuck.release("50\n")
        reading.join(30)
    assert sensors.status(now=200.0)["light"]["lux"] == 50.0
