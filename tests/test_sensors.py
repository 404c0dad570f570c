"""Ambient light and PIR: the pure policy on supplied times, then the sensor thread on a fake
sysfs tree laid out as real drivers do (an IIO bh1750/tsl2591 under bus/iio/devices, a sysfs
GPIO line's value)."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from wattgate.daemon.sensors import (
    LOOK_AGAIN_S,
    SensorSettings,
    SensorWatch,
    attribute_of,
    find_light_sensor,
)
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.lighting import LightingPolicy, LightingSettings, LightVerdict, PirTrigger


def current(sensors: SensorWatch) -> dict[str, Any]:
    """What the watch's status shows as read now: lux while the light sensor answers, the
    PIR's state while it reads."""
    status = sensors.status()
    out: dict[str, Any] = {}
    light = status["light"]
    if "lux" in light and "error" not in light:
        out["lux"] = light["lux"]
    pir = status.get("pir")
    if pir is not None and "error" not in pir:
        out["pir"] = pir["active"]
    return out


# -- the policy ------------------------------------------------------------------------------


def feed(policy: LightingPolicy, readings: list[float], step: float = 1.0) -> list[LightVerdict]:
    return [policy.update(lux, i * step) for i, lux in enumerate(readings)]


def test_steady_and_slowly_changing_light_is_no_change() -> None:
    steady = feed(LightingPolicy(), [300.0 + (i % 3) for i in range(20)])
    sunrise = feed(LightingPolicy(), [10.0 * 1.15**i for i in range(40)])  # x66 in 40 s
    assert not any(v.change for v in steady + sunrise)
    assert all(v.suppress_until is None for v in steady + sunrise)


def test_lights_switched_on_and_off_are_changes_with_a_suppression_window() -> None:
    verdicts = feed(LightingPolicy(LightingSettings(suppress_s=3.0)),
                    [12.0, 12.0, 420.0, 420.0, 420.0, 420.0, 420.0, 11.0])
    assert [v.change for v in verdicts] == [False, False, True, False, False, False, False, True]
    assert verdicts[2].before == 12.0 and verdicts[2].suppress_until == 5.0
    assert verdicts[4].suppress_until == 5.0  # still suppressed two readings later
    assert verdicts[5].suppress_until is None  # over at 5.0
    assert verdicts[7].before == 420.0


def test_a_lamp_warming_up_over_two_readings_is_one_change() -> None:
    verdicts = feed(LightingPolicy(), [20.0, 20.0, 35.0, 90.0, 160.0, 160.0])
    assert sum(v.change for v in verdicts) == 1


def test_noise_in_the_dark_is_not_a_change_but_an_ir_switch_is() -> None:
    dark = feed(LightingPolicy(), [0.5, 2.0, 0.0, 3.0, 1.0, 0.2])
    assert not any(v.change for v in dark)
    ir_off = feed(LightingPolicy(), [0.4, 0.4, 60.0])  # the IR illuminator lights the room
    assert ir_off[-1].change


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        LightingSettings(jump_ratio=1.0)


def test_pir_triggers_on_rising_edges_and_holds() -> None:
    pir = PirTrigger(hold_s=10.0)
    outputs = [0, 1, 1, 1, 0, 0, 1, 0]
    rising = [pir.update(bool(v), float(i)) for i, v in enumerate(outputs)]
    assert rising == [False, True, False, False, False, False, True, False]
    assert pir.triggers == 2 and pir.last_trigger == 6.0
    assert pir.holding(15.9) and not pir.holding(16.0)  # held 10 s after last seen high


# -- the sensor thread on a fake tree -------------------------------------------------------------


def write_whole(path: Path, text: str) -> None:
    """An attribute written whole, as a sysfs read sees it: write_text's truncate-then-write
    lets a thread reading meanwhile see it empty."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


class Tree:
    """A sysfs root with IIO devices and a GPIO line, written as their drivers lay them out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fs = Sysfs(root)

    def attr(self, rel: str, value: Any) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, f"{value}\n")

    def temp_sensor(self, name: str = "iio:device0") -> None:  # a temperature-only device
        self.attr(f"bus/iio/devices/{name}/name", "tmp117")
        self.attr(f"bus/iio/devices/{name}/in_temp_raw", 2800)
        self.attr(f"bus/iio/devices/{name}/in_temp_scale", "7.8125")

    def bh1750(self, lux_raw: int, name: str = "iio:device1") -> None:  # raw x scale
        self.attr(f"bus/iio/devices/{name}/name", "bh1750")
        self.attr(f"bus/iio/devices/{name}/in_illuminance_raw", lux_raw)
        self.attr(f"bus/iio/devices/{name}/in_illuminance_scale", "0.833333")

    def tsl2591(self, lux: float, name: str = "iio:device2") -> None:  # processed
        self.attr(f"bus/iio/devices/{name}/name", "tsl2591")
        self.attr(f"bus/iio/devices/{name}/in_illuminance_input", lux)

    def gpio(self, value: int, line: int = 17) -> str:
        self.attr(f"class/gpio/gpio{line}/direction", "in")
        self.attr(f"class/gpio/gpio{line}/value", value)
        return f"/sys/class/gpio/gpio{line}/value"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "sys")


class Recorder:
    def __init__(self) -> None:
        self.lighting: list[LightVerdict] = []
        self.pir: list[float] = []
        self.seen = threading.Event()

    def on_lighting(self, verdict: LightVerdict) -> None:
        self.lighting.append(verdict)
        self.seen.set()

    def on_pir(self, ts: float) -> None:
        self.pir.append(ts)
        self.seen.set()


def watch(tree: Tree, rec: Recorder, **settings: Any) -> SensorWatch:
    return SensorWatch(tree.fs, SensorSettings(**settings), rec.on_lighting, rec.on_pir)


def test_auto_finds_the_illuminance_sensor_not_the_thermometer(tree: Tree) -> None:
    tree.temp_sensor()
    assert find_light_sensor(tree.fs, "auto") == (None, "no IIO illuminance sensor")
    tree.bh1750(240)
    assert find_light_sensor(tree.fs, "auto") == ("iio:device1", "")
    no_lux = (None, "iio:device0: no illuminance reading")
    assert find_light_sensor(tree.fs, "iio:device0") == no_lux
    assert find_light_sensor(tree.fs, "none") == (None, "disabled")


def test_a_light_jump_calls_back_once_and_shows_in_status(tree: Tree) -> None:
    tree.bh1750(12)  # 10 lx
    rec = Recorder()
    sensors = watch(tree, rec, light_poll_s=1.0, light_suppress_s=3.0)
    assert sensors.active and sensors.light_sensor == "iio:device1"
    sensors.poll(0.0, 1000.0)
    assert current(sensors) == {"lux": 10.0}
    sensors.poll(0.5, 1000.5)  # not due yet: nothing read
    tree.bh1750(600)  # lights on: 500 lx
    sensors.poll(1.0, 1001.0)
    sensors.poll(2.0, 1002.0)
    assert [v.lux for v in rec.lighting] == [pytest.approx(500.0, rel=1e-4)]
    assert sensors.motion_suppressed(3.9) and not sensors.motion_suppressed(4.0)
    status = sensors.status(now=2.0)
    assert status["light"]["sensor"] == "iio:device1"
    assert status["light"]["lux"] == pytest.approx(500.0, rel=1e-4)
    assert status["light"]["changes"] == 1 and status["light"]["last_change"] == 1001.0
    assert "pir" not in status


def test_a_processed_reading_is_preferred_and_a_vanished_sensor_is_reported(tree: Tree) -> None:
    tree.tsl2591(321.5)
    sensors = watch(tree, Recorder())
    sensors.poll(0.0, 0.0)
    assert current(sensors) == {"lux": 321.5}
    (tree.root / "bus/iio/devices/iio:device2/in_illuminance_input").unlink()
    sensors.poll(5.0, 5.0)
    assert current(sensors) == {}
    assert sensors.status()["light"]["error"] == "no reading"


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "1e999"])
def test_a_reading_that_is_not_a_finite_number_is_no_reading(tree: Tree, text: str) -> None:
    """No kernel driver prints these, but a fake or broken one could: a lamp of infinite
    lux would be a lighting change (and a gate recalibration) for nothing."""
    tree.tsl2591(10.0)
    rec = Recorder()
    sensors = watch(tree, rec)
    sensors.poll(0.0, 0.0)
    (tree.root / "bus/iio/devices/iio:device2/in_illuminance_input").write_text(text + "\n")
    sensors.poll(5.0, 5.0)
    assert rec.lighting == [] and current(sensors) == {}
    assert sensors.status()["light"]["error"] == "no reading"


@pytest.mark.parametrize("active_low", [False, True])
def test_pir_edges_wake_once_per_trigger(tree: Tree, active_low: bool) -> None:
    idle, high = (1, 0) if active_low else (0, 1)
    path = tree.gpio(idle)
    rec = Recorder()
    sensors = watch(tree, rec, light="none", pir=path, pir_active_low=active_low, pir_hold_s=5.0)
    assert sensors.pir_attribute == "class/gpio/gpio17/value"
    sequence = [idle, high, high, idle, high]
    for i, value in enumerate(sequence):
        tree.gpio(value)
        sensors.poll(float(i), 100.0 + i)
    assert rec.pir == [101.0, 104.0]
    status = sensors.status(now=4.0)
    assert status["pir"] == {
        "attribute": "class/gpio/gpio17/value", "active": True, "holding": True, "triggers": 2
    }
    assert status["light"] == {"reason": "disabled"}
    assert current(sensors) == {"pir": True}


def test_nothing_to_poll_starts_no_thread(tree: Tree) -> None:
    sensors = watch(tree, Recorder(), light="none")
    assert not sensors.active
    sensors.start()
    assert not any(t.name == "wattgate-sensors" for t in threading.enumerate())
    sensors.stop()


class ReadNoting(Sysfs):
    """A Sysfs telling when one attribute has been read: the thread's first PIR read is the
    output as found (someone already there when high), so the test raises it only after."""

    def __init__(self, root: Path, attribute: str) -> None:
        super().__init__(root)
        self.attribute = attribute
        self.seen = threading.Event()

    def read_int_opt(self, attribute: str) -> Optional[int]:
        value = super().read_int_opt(attribute)
        if attribute == self.attribute:
            self.seen.set()
        return value


def test_the_thread_reports_a_pir_trigger_and_stops(tree: Tree) -> None:
    tree.tsl2591(50.0)
    path = tree.gpio(0)
    rec = Recorder()
    fs = ReadNoting(tree.root, "class/gpio/gpio17/value")
    settings = SensorSettings(pir=path, pir_poll_s=0.02, light_poll_s=0.05)
    sensors = SensorWatch(fs, settings, rec.on_lighting, rec.on_pir)
    sensors.start()
    try:
        assert fs.seen.wait(30), "the PIR was never read"
        tree.gpio(1)
        assert rec.seen.wait(30), "no PIR trigger seen"
        assert len(rec.pir) == 1
    finally:
        sensors.stop(timeout=10)
    assert not any(t.name == "wattgate-sensors" for t in threading.enumerate())


def test_paths_are_taken_under_the_sysfs_root() -> None:
    assert attribute_of("/sys/class/gpio/gpio5/value") == "class/gpio/gpio5/value"
    assert attribute_of("class/gpio/gpio5/value") == "class/gpio/gpio5/value"
    assert SensorSettings.from_config(object()) == SensorSettings()


# -- the real daemon ---------------------------------------------------------------------------

def test_the_daemon_reports_light_and_a_lighting_change(
    start_daemon: Any, tree: Tree
) -> None:
    tree.tsl2591(8.0)
    daemon = start_daemon(
        power={"sysfs_root": str(tree.root), "enabled": False},
        sensors={"light_poll_s": 0.05},
    )
    with daemon.connect() as client:
        deadline = time.monotonic() + 30
        while client.request("status").get("sensors", {}).get("light", {}).get("lux") != 8.0:
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        client.request("subscribe", topics=["events"])
        tree.tsl2591(700.0)  # lights on
        client.settimeout(30.0)
        for message in client.messages():
            if message.get("class") == "event" and message.get("kind") == "lighting":
                assert message["lux"] == 700.0 and message["before"] == 8.0
                break
        light = client.request("status")["sensors"]["light"]
        assert light["sensor"] == "iio:device2" and light["changes"] == 1
    assert daemon.stop() == 0


class ReadFaultIO:
    """Plain OS reads, except that chosen attributes fail with the errno a driver returns.

    EIO (an I2C transfer the sensor did not ack) and EINVAL come from a driver's show()
    callback; a file on tmpfs cannot give them, so they are injected here at the I/O layer.
    The file is opened first, so a path that does not exist still fails as the OS says."""

    def __init__(self, root: Path) -> None:
        from wattgate.drivers.sysfs import OsIO

        self.os = OsIO()
        self.root = root
        self.faults: dict[str, int] = {}

    def read_text(self, path: Path) -> str:
        text = self.os.read_text(path)
        err = self.faults.get(str(path.relative_to(self.root)))
        if err is not None:
            raise OSError(err, os.strerror(err), str(path))
        return text

    def write_text(self, path: Path, data: str) -> None:
        self.os.write_text(path, data)


@pytest.mark.parametrize("light", ["auto", "iio:device1"])
def test_a_light_sensor_that_fails_its_first_read_is_still_polled(tree: Tree, light: str) -> None:
    """An I2C light sensor answering EIO at start-up (still powering up, a bus glitch) was
    taken for no sensor, and the daemon never looked at it again until restarted."""
    tree.temp_sensor()
    tree.bh1750(240)
    io = ReadFaultIO(tree.root)
    io.faults["bus/iio/devices/iio:device1/in_illuminance_raw"] = errno.EIO
    fs = Sysfs(tree.root, io)
    rec = Recorder()
    sensors = SensorWatch(fs, SensorSettings(light=light), rec.on_lighting, rec.on_pir)
    assert sensors.light_sensor == "iio:device1" and sensors.active
    sensors.poll(0.0, 0.0)
    assert current(sensors) == {} and sensors.status()["light"]["error"] == "no reading"
    io.faults.clear()  # the sensor answers now
    sensors.poll(5.0, 5.0)
    assert current(sensors) == {"lux": 200.0}
    assert "error" not in sensors.status()["light"]


def test_an_auto_light_sensor_that_comes_back_under_another_name_is_followed(
    tree: Tree
) -> None:
    """A sensor re-probed after an I2C error (unbound, bound again) registers a new IIO
    device, whose index need not be the old one: with light = "auto" it is the sensor."""
    tree.temp_sensor()
    tree.bh1750(240, name="iio:device1")
    sensors = watch(tree, Recorder())
    sensors.poll(0.0, 0.0)
    assert current(sensors) == {"lux": 200.0}
    shutil.rmtree(tree.root / "bus/iio/devices/iio:device1")
    sensors.poll(1.0, 1.0)
    assert sensors.status()["light"]["error"] == "no reading"
    tree.bh1750(240, name="iio:device3")
    sensors.poll(2.0, 2.0)
    assert current(sensors) == {"lux": 200.0}
    assert sensors.status()["light"]["sensor"] == "iio:device3"
    # a sensor named in the config is that sensor, gone or not
    named = watch(tree, Recorder(), light="iio:device3")
    shutil.rmtree(tree.root / "bus/iio/devices/iio:device3")
    tree.bh1750(240, name="iio:device4")
    named.poll(0.0, 0.0)
    assert named.status()["light"]["sensor"] == "iio:device3" and current(named) == {}


@pytest.mark.parametrize("light", ["auto", "iio:device1"])
def test_a_light_sensor_whose_driver_loads_after_the_start_is_found(
    tree: Tree, light: str
) -> None:
    """An IIO light driver is often a module that probes after the daemon has started (a
    late I2C bus, a deferred probe): it was not there when the sensors were looked for,
    and the lighting policy went without it until a restart."""
    tree.temp_sensor()
    rec = Recorder()
    sensors = watch(tree, rec, light=light)
    assert sensors.light_sensor is None
    assert sensors.active  # something to look for: the thread runs
    sensors.poll(0.0, 0.0)
    assert current(sensors) == {}
    tree.bh1750(240)  # the driver probes
    sensors.poll(LOOK_AGAIN_S, LOOK_AGAIN_S)
    assert sensors.light_sensor == "iio:device1"
    assert current(sensors) == {"lux": 200.0}
    assert "light" in sensors.status()


def test_light_none_looks_for_nothing(tree: Tree) -> None:
    sensors = watch(tree, Recorder(), light="none")
    assert not sensors.active
    tree.bh1750(240)
    sensors.poll(LOOK_AGAIN_S, LOOK_AGAIN_S)
    assert sensors.light_sensor is None
