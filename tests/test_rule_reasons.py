"""A rule held only by its hysteresis says so in its reason, with the point it lets go at:
the reading is back past the trip, and "79 °C above 80 °C" was false in status, the power
messages and the log.

The thermal case runs the power controller on the fake sysfs tree of a real board
(rk3588), as in tests/test_power_controller.py; the others feed the rule engine readings."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.boards import materialize
from wattgate.config import RuleConfig, parse_config
from wattgate.daemon.power import PowerController
from wattgate.policies.rules import Readings, RuleEngine

SOC_TEMP = "devices/virtual/thermal/thermal_zone0/temp"  # type soc-thermal
PROFILES = {"balanced", "powersave"}


def reasons(rule: RuleConfig, readings: list[Readings]) -> list[str]:
    engine = RuleEngine([rule], "balanced", PROFILES)
    return [engine.evaluate(r)[0].reason for r in readings]


def test_a_zone_inside_its_hysteresis_is_said_held_in_status_and_messages(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sys"
    materialize("rk3588", root)
    c = PowerController(parse_config({
        "power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        "rules": [{"temp_above_c": 80, "zone": "soc-thermal", "hysteresis_c": 5,
                   "profile": "powersave"}],
    }))
    c.start(0.0)
    try:
        (root / SOC_TEMP).write_text("81000\n")
        c.tick(1.0)
        assert c.status()["profile"]["reason"] == "soc-thermal 81 °C above 80 °C"
        (root / SOC_TEMP).write_text("79000\n")
        c.tick(2.0)
        held = "soc-thermal 79 °C, held until 75 °C or below"
        assert c.decision.profile == "powersave"
        assert c.status()["profile"]["reason"] == held
        assert c.power_message()["reason"] == held
        (root / SOC_TEMP).write_text("75000\n")
        c.tick(3.0)
        assert c.decision.profile == "balanced"  # released where the reason said
    finally:
        c.stop()


def test_a_battery_inside_its_hysteresis_is_said_held() -> None:
    rule = RuleConfig(battery_below=20, profile="powersave")
    assert reasons(rule, [Readings(battery_percent=p) for p in (15, 21, 22)]) == [
        "battery 15 % below 20 %", "battery 21 %, held until 22 % or above",
        "default (power.profile)"]


def test_light_inside_its_hysteresis_is_said_held() -> None:
    dark = RuleConfig(lux_below=2, hysteresis_lux=5, profile="powersave")
    assert reasons(dark, [Readings(lux=lux) for lux in (1, 6, 7)]) == [
        "light 1 lx below 2 lx", "light 6 lx, held until 7 lx or above",
        "default (power.profile)"]
    bright = RuleConfig(lux_above=50, hysteresis_lux=10, profile="powersave")
    assert reasons(bright, [Readings(lux=lux) for lux in (60, 45, 40)]) == [
        "light 60 lx above 50 lx", "light 45 lx, held until 40 lx or below",
        "default (power.profile)"]
