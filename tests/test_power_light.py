"""The power side's light reading: the sensor `sensors.light` names, or none.

The light rules took lux from the first IIO device that had any: with light = "none" a
dark-room rule still switched profiles, and a named sensor lost to another device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.boards import describe
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.daemon.sensors import SensorSettings, SensorWatch
from wattgate.drivers.sysfs import Sysfs

I2C = "devices/platform/soc/fe804000.i2c/i2c-1"
RULES = [{"lux_below": 10.0, "profile": "powersave"}]


def _board(tmp_path: Path) -> Path:
    """An RK3588 with two bh1750s: iio:device0 in the dark (2 lx), iio:device1 lit (200 lx)."""
    b = describe("rk3588")
    for n, (addr, raw) in enumerate((("1-0023", 2), ("1-005c", 240))):
        dev = f"{I2C}/{addr}/iio:device{n}"
        b.attrs(dev, {"name": "bh1750", "in_illuminance_raw": raw,
                      "in_illuminance_scale": "0.833333"})
        b.link(f"bus/iio/devices/iio:device{n}", dev)
    return b.write(tmp_path / "sys")


def _controller(tmp_path: Path, light: str, **extra: Any) -> PowerController:
    raw: dict[str, Any] = {
        "power": {"sysfs_root": str(_board(tmp_path)), "journal_dir": str(tmp_path / "j")},
        "sensors": {"light": light}, "rules": RULES, **extra}
    return PowerController(parse_config(raw))


def _profile_and_lux(pc: PowerController) -> tuple[str, Any]:
    pc.start(0.0)
    try:
        return pc.decision.profile, pc.lux
    finally:
        pc.stop()


def test_light_none_leaves_the_light_rules_without_a_reading(tmp_path: Path) -> None:
    assert _profile_and_lux(_controller(tmp_path, "none")) == ("balanced", None)


def test_a_named_light_sensor_is_the_one_read(tmp_path: Path) -> None:
    profile, lux = _profile_and_lux(_controller(tmp_path, "iio:device1"))
    assert profile == "balanced" and round(lux) == 200


def test_auto_reads_the_first_light_sensor(tmp_path: Path) -> None:
    profile, lux = _profile_and_lux(_controller(tmp_path, "auto"))
    assert profile == "powersave" and round(lux, 1) == 1.7


def test_a_reload_to_light_none_stops_the_light_rules(tmp_path: Path) -> None:
    pc = _controller(tmp_path, "auto")
    pc.start(0.0)
    try:
        assert pc.decision.profile == "powersave"
        pc.reload(parse_config({**pc.cfg.model_dump(), "sensors": {"light": "none"}}), 1.0)
        pc.tick(2.0)
        assert pc.lux is None
    finally:
        pc.stop()


def test_auto_keeps_reading_the_sensor_the_sensor_watch_reads_when_another_appears(
    tmp_path: Path,
) -> None:
    """With light = "auto" the sensor watch keeps the sensor it found while it is there; a
    second sensor probed later under a lower index (a module loaded late) made the light
    rules read that one while the watch, its events and the status read the first."""
    pc = _controller(tmp_path, "auto")
    root = Path(pc.cfg.power.sysfs_root)
    dark = root / "bus/iio/devices/iio:device0"
    moved = root / I2C / "1-0023" / "iio:device2"  # device0's node, under an index above
    (root / I2C / "1-0023" / "iio:device0").rename(moved)
    dark.unlink()
    (root / "bus/iio/devices/iio:device2").symlink_to(moved)
    watch = SensorWatch(Sysfs(str(root)), SensorSettings(light="auto"))
    pc.start(0.0)
    try:
        assert watch.light_sensor == "iio:device1" and pc.lux is not None and round(pc.lux) == 200
        moved.rename(root / I2C / "1-0023" / "iio:device0")  # a sensor under index 0 now
        (root / "bus/iio/devices/iio:device2").unlink()
        dark.symlink_to(root / I2C / "1-0023" / "iio:device0")
        pc.tick(1.0)
        watch.poll(1.0, 1.0)
        assert watch.light_sensor == "iio:device1"
        assert pc.lux is not None and round(pc.lux) == 200 and pc.decision.profile == "balanced"
    finally:
        pc.stop()
