"""A sensor that does not answer (a hung I2C transfer, a light sensor's long one-shot
conversion) holds up nothing but itself. The slow attribute is a real FIFO: opening it for
reading blocks until a writer comes, as a read() blocks in a driver's show()."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.fixtures.boards import materialize
from tests.test_sensors import ReadNoting, Recorder, Tree
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.daemon.sensors import SensorSettings, SensorWatch


class Stuck:
    """A FIFO in place of an attribute. `wait_for_reader` returns once a reader is blocked
    on it, and keeps it blocked (the write end open, nothing written); `release(text)`
    answers it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: Optional[int] = None
        staged = path.with_name(path.name + ".fifo")  # swapped in whole: never missing
        os.mkfifo(staged)
        os.replace(staged, path)

    def wait_for_reader(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.fd is None:
            try:  # succeeds once a reader has it open: that reader now waits in read()
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                assert time.monotonic() < deadline, "nothing read the attribute"
                time.sleep(0.01)

    def release(self, text: str) -> None:
        """Answer the reader; nothing to do when it has gone (its process ended)."""
        if self.fd is not None:
            with contextlib.suppress(BrokenPipeError):
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
    fs = ReadNoting(tree.root, "class/gpio/gpio17/value")
    sensors = SensorWatch(fs, SensorSettings(pir=path, pir_poll_s=0.02, light_poll_s=0.05),
                          rec.on_lighting, rec.on_pir)
    sensors.start()
    try:
        stuck.wait_for_reader()
        assert fs.seen.wait(20), "the PIR was not read while the light sensor hung"
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


# -- the power controller's readings -----------------------------------------------------------

TCPU = "class/thermal/thermal_zone2/temp"  # intel-mtl: TCPU at 51.05 °C


def ticked(pc: PowerController, now: float) -> None:
    """pc.tick(now) on another thread, which must come back: a read that hangs must not
    hang the tick (the daemon runs it on its event loop)."""
    thread = threading.Thread(target=pc.tick, args=(now,), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the tick hung on one sensor"


@pytest.fixture
def mtl(tmp_path: Path) -> Iterator[tuple[Path, list[Stuck]]]:
    root = materialize("intel-mtl", tmp_path / "sys")
    stuck: list[Stuck] = []
    yield root, stuck
    for fifo in stuck:
        fifo.release("50000\n")


def test_a_thermal_zone_that_does_not_answer_holds_up_neither_the_tick_nor_the_others(
    mtl: tuple[Path, list[Stuck]], tmp_path: Path
) -> None:
    root, stuck = mtl
    cfg = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")},
                        "rules": [{"temp_above_c": 50.0, "zone": "TCPU",
                                   "profile": "powersave"}]})
    pc = PowerController(cfg)
    pc.start(0.0)
    assert pc.decision.profile == "powersave"
    fifo = Stuck(root / TCPU)
    stuck.append(fifo)
    for t in (1.0, 2.0, 3.0):
        ticked(pc, t)
        temps = pc.status()["temperatures"]
        assert "TCPU" not in temps and temps["acpitz"] == 44.0
        assert pc.status()["battery"]["percent"] == 76  # the others still read
        assert pc.decision.profile == "powersave"  # unknown: the rule holds
    fifo.wait_for_reader()
    fifo.release("40000\n")  # it answers at last, cool
    t = 4.0
    while pc.decision.profile == "powersave":
        assert t < 30.0, "the zone's answer was never taken"
        ticked(pc, t)
        t += 1.0
    assert pc.status()["temperatures"]["TCPU"] == 40.0
    pc.stop()


def test_a_battery_that_does_not_answer_is_shown_and_its_rule_holds(
    mtl: tuple[Path, list[Stuck]], tmp_path: Path
) -> None:
    root, stuck = mtl
    cfg = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")},
                        "rules": [{"on_battery": True, "battery_below": 80.0,
                                   "profile": "powersave"}]})
    pc = PowerController(cfg)
    pc.start(0.0)
    stuck.append(Stuck(root / "class/power_supply/BAT0/capacity"))
    for t in (1.0, 2.0):
        ticked(pc, t)
        assert pc.status()["battery"] == {"name": "BAT0", "error": "no answer"}
        assert pc.decision.profile == "powersave"
        assert "acpitz" in pc.status()["temperatures"]
    pc.stop()


def test_the_daemon_answers_while_a_zone_does_not(
    start_daemon: Any, mtl: tuple[Path, list[Stuck]], tmp_path: Path
) -> None:
    root, stuck = mtl
    fifo = Stuck(root / TCPU)
    stuck.append(fifo)
    daemon = start_daemon(power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")})
    with daemon.connect() as client:
        fifo.wait_for_reader()
        for _ in range(3):  # ticks go on: every status shows the zones that answer
            temps = client.request("status")["power"]["temperatures"]
            assert "TCPU" not in temps and temps["acpitz"] == 44.0
    assert daemon.stop() == 0
    # the one read that hangs is named at exit; the idle readers have ended
    assert "exiting with 1 thread(s) still in a call: wattgate-read\n" in daemon.log()


def test_a_stop_leaves_no_idle_reader_behind(
    start_daemon: Any, mtl: tuple[Path, list[Stuck]], tmp_path: Path
) -> None:
    """Idle read threads end at a stop: the threads named as left in a call at exit are
    ones that hang, and with none the process ends as any other does (finalized)."""
    root, _ = mtl
    daemon = start_daemon(power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")})
    with daemon.connect() as client:
        assert client.request("status")["power"]["temperatures"]["TCPU"] == 51.0  # read
    assert daemon.stop() == 0
    assert "still in a call" not in daemon.log()


def test_a_child_forked_after_reads_can_read() -> None:
    """fork() copies the workers' bookkeeping but not their threads: without new ones the
    child's reads would queue for ever and every source would stay unread."""
    from wattgate.daemon.power_inputs import Sources

    assert Sources().gather({"warm": lambda: 1})[0] == {"warm": 1}  # threads started here
    pid = os.fork()
    if pid == 0:  # the child: a real fork of this process
        answers, _ = Sources().gather({"zone": lambda: 42})
        os._exit(0 if answers == {"zone": 42} else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_stop_without_knobs_leaves_no_idle_reader_behind(
    start_daemon: Any, tmp_path: Path
) -> None:
    """A start that finds no knobs has read the inputs (a thermal zone) all the same:
    their idle threads end at the stop too."""
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("45000\n")
    root = tmp_path / "sys"
    daemon = start_daemon(power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")})
    daemon.connect().close()
    assert daemon.stop() == 0
    assert "no power knobs under" in daemon.log()
    assert "still in a call" not in daemon.log()


def test_reads_after_a_stop_start_new_readers() -> None:
    """A stop ends the idle readers and leaves none of its ends for the new ones."""
    from wattgate.daemon.power_inputs import _Workers

    workers = _Workers(2)  # the daemon's are shared with the other tests in this process
    assert workers.submit(lambda: 1).result(10) == 1
    readers = [t for t in threading.enumerate() if t.name == "wattgate-read"]
    workers.stop(10.0)
    assert [t for t in threading.enumerate() if t.name == "wattgate-read"] != readers
    assert len(readers) - len([t for t in readers if t.is_alive()]) == 2  # both ended
    futures = [workers.submit(lambda v=value: v) for value in range(10)]  # type: ignore[misc]
    assert [future.result(10) for future in futures] == list(range(10))
    workers.stop(10.0)
