"""Rules: AC/battery, battery level, thermal trips and light with hysteresis, pins, reasons."""

from __future__ import annotations

from typing import Any

import pytest

from wattgate.config import RuleConfig
from wattgate.policies.rules import BATTERY_HYSTERESIS, Decision, Readings, RuleEngine

PROFILES = ("balanced", "powersave", "performance", "inspection")


def engine(*rules: dict[str, Any]) -> RuleEngine:
    return RuleEngine([RuleConfig.model_validate(r) for r in rules], "balanced", PROFILES)


def test_no_rule_gives_the_default() -> None:
    decision, changes = engine().evaluate(Readings())
    assert (decision.profile, decision.source, decision.reason) == (
        "balanced", "default", "default (power.profile)")
    assert changes == []


@pytest.mark.parametrize(
    ("on_battery", "reading", "holds"),
    [(True, True, True), (True, False, False), (True, None, False),
     (False, False, True), (False, True, False), (False, None, False)],
)
def test_on_battery_and_on_mains(on_battery: bool, reading: Any, holds: bool) -> None:
    e = engine({"on_battery": on_battery, "profile": "powersave"})
    decision, _ = e.evaluate(Readings(on_battery=reading))
    assert (decision.profile == "powersave") == holds
    if holds:
        assert decision.reason == ("on battery" if on_battery else "on mains")
        assert (decision.source, decision.rule) == ("rule", 0)


def test_battery_below_with_hysteresis() -> None:
    e = engine({"battery_below": 20.0, "profile": "powersave"})
    assert e.evaluate(Readings(battery_percent=25))[0].profile == "balanced"
    decision, changes = e.evaluate(Readings(battery_percent=19))
    assert decision.profile == "powersave"
    assert decision.reason == "battery 19 % below 20 %"
    assert [(c.kind, c.held) for c in changes] == [("battery", True)]
    # charging back over 20 % is not enough: it lets go at 20 + BATTERY_HYSTERESIS
    assert e.evaluate(Readings(battery_percent=20 + BATTERY_HYSTERESIS - 0.5))[0].profile == \
        "powersave"
    decision, changes = e.evaluate(Readings(battery_percent=20 + BATTERY_HYSTERESIS))
    assert decision.profile == "balanced" and [c.held for c in changes] == [False]
    assert e.evaluate(Readings())[0].profile == "balanced"  # no battery at all


def test_thermal_trip_with_hysteresis_on_any_zone() -> None:
    e = engine({"temp_above_c": 85.0, "hysteresis_c": 5.0, "profile": "powersave"})
    cool = {"soc-thermal": 60.0, "npu-thermal": 84.9}
    assert e.evaluate(Readings(temps_c=cool))[0].profile == "balanced"
    decision, changes = e.evaluate(Readings(temps_c={"soc-thermal": 60.0, "npu-thermal": 86.0}))
    assert decision.profile == "powersave"
    assert decision.reason == "npu-thermal 86 °C above 85 °C"
    assert [(c.kind, c.held, c.detail) for c in changes] == [
        ("thermal", True, "any zone 86 °C")]
    # between the trip and trip - hysteresis the rule keeps holding
    decision, changes = e.evaluate(Readings(temps_c={"npu-thermal": 80.5}))
    assert decision.profile == "powersave" and changes == []
    decision, changes = e.evaluate(Readings(temps_c={"npu-thermal": 80.0}))
    assert decision.profile == "balanced" and [c.held for c in changes] == [False]


def test_thermal_rule_on_a_named_zone_and_a_vanished_sensor() -> None:
    e = engine({"temp_above_c": 70.0, "zone": "soc-thermal", "profile": "powersave"})
    assert e.evaluate(Readings(temps_c={"gpu-thermal": 99.0}))[0].profile == "balanced"
    assert e.evaluate(Readings(temps_c={"soc-thermal": 71.0}))[0].profile == "powersave"
    # no reading any more: a hot rule stays held until the zone reads cool again
    decision, _ = e.evaluate(Readings())
    assert decision.profile == "powersave" and "held" in decision.reason
    assert e.evaluate(Readings(temps_c={"soc-thermal": 60.0}))[0].profile == "balanced"


def test_light_below_and_above_with_hysteresis() -> None:
    dark = engine({"lux_below": 2.0, "hysteresis_lux": 3.0, "profile": "powersave"})
    assert dark.evaluate(Readings(lux=10.0))[0].profile == "balanced"
    decision, changes = dark.evaluate(Readings(lux=1.0))
    assert decision.profile == "powersave" and decision.reason == "light 1 lx below 2 lx"
    assert changes[0].kind == "light"
    assert dark.evaluate(Readings(lux=4.9))[0].profile == "powersave"
    assert dark.evaluate(Readings(lux=5.0))[0].profile == "balanced"
    bright = engine({"lux_above": 1000.0, "hysteresis_lux": 100.0, "profile": "performance"})
    assert bright.evaluate(Readings(lux=1001.0))[0].profile == "performance"
    assert bright.evaluate(Readings(lux=901.0))[0].profile == "performance"
    assert bright.evaluate(Readings(lux=900.0))[0].profile == "balanced"
    assert bright.evaluate(Readings())[0].profile == "balanced"


def test_all_conditions_of_a_rule_must_hold() -> None:
    e = engine({"on_battery": True, "battery_below": 30.0, "profile": "powersave"})
    assert e.evaluate(Readings(on_battery=True, battery_percent=50))[0].profile == "balanced"
    assert e.evaluate(Readings(on_battery=False, battery_percent=10))[0].profile == "balanced"
    decision, _ = e.evaluate(Readings(on_battery=True, battery_percent=10))
    assert decision.profile == "powersave"
    assert decision.reason == "battery 10 % below 30 % and on battery"


def test_first_rule_that_holds_wins_and_latches_of_later_rules_still_update() -> None:
    e = engine(
        {"name": "unplugged", "on_battery": True, "profile": "powersave"},
        {"temp_above_c": 80.0, "profile": "inspection"},
    )
    decision, changes = e.evaluate(Readings(on_battery=True, temps_c={"soc": 90.0}))
    assert (decision.profile, decision.reason, decision.rule) == ("powersave", "unplugged", 0)
    assert [c.rule for c in changes] == [1]  # the thermal latch moved although rule 0 won
    decision, _ = e.evaluate(Readings(on_battery=False, temps_c={"soc": 78.0}))
    assert decision.profile == "inspection"  # still held by hysteresis


def test_rule_with_only_a_model_variant_keeps_the_default_profile() -> None:
    e = engine({"on_battery": True, "model_variant": "lite"})
    decision, _ = e.evaluate(Readings(on_battery=True))
    assert (decision.profile, decision.model_variant) == ("balanced", "lite")


def test_pin_overrides_rules_until_released() -> None:
    e = engine({"on_battery": True, "profile": "powersave"})
    e.pin("performance", "uid 1000 pid 42")
    decision, _ = e.evaluate(Readings(on_battery=True))
    assert (decision.profile, decision.source, decision.pinned_by) == (
        "performance", "pin", "uid 1000 pid 42")
    assert decision.reason == "pinned by uid 1000 pid 42"
    e.pin(None, "uid 1000 pid 42")
    assert e.evaluate(Readings(on_battery=True))[0].profile == "powersave"
    assert e.pinned_by is None


def test_pin_of_an_unknown_profile_is_a_key_error() -> None:
    e = engine()
    with pytest.raises(KeyError, match="unknown profile 'turbo'"):
        e.pin("turbo", "someone")
    assert e.pinned is None


def test_a_light_rule_above_a_dim_level_releases_in_the_dark() -> None:
    # lux_above 2 with the default 5 lx hysteresis: released "below -3 lx" would never come
    e = engine({"lux_above": 2.0, "profile": "performance"})
    assert e.evaluate(Readings(lux=50.0))[0].profile == "performance"
    assert e.evaluate(Readings(lux=1.0))[0].profile == "performance"  # still within it
    decision, changes = e.evaluate(Readings(lux=0.0))
    assert decision.profile == "balanced"
    assert [(c.kind, c.held) for c in changes] == [("light", False)]


@pytest.mark.parametrize("below", [99.0, 100.0])
def test_a_battery_rule_near_full_releases_when_the_battery_is_full(below: float) -> None:
    # below + BATTERY_HYSTERESIS is over 100 %, a capacity no battery reports
    e = engine({"battery_below": below, "profile": "powersave"})
    assert e.evaluate(Readings(battery_percent=90))[0].profile == "powersave"
    assert e.evaluate(Readings(battery_percent=99.5))[0].profile == "powersave"
    decision, changes = e.evaluate(Readings(battery_percent=100))
    assert decision.profile == "balanced"
    assert [(c.kind, c.held) for c in changes] == [("battery", False)]


def test_any_zone_rule_holds_while_the_zone_that_tripped_it_cannot_be_read() -> None:
    # A hot zone whose read fails every other tick must not flip the profile each tick.
    e = engine({"temp_above_c": 85.0, "profile": "powersave"})
    hot = {"soc-thermal": 60.0, "npu-thermal": 90.0}
    assert e.evaluate(Readings(temps_c=hot))[0].profile == "powersave"
    for _ in range(3):
        decision, changes = e.evaluate(Readings(temps_c={"soc-thermal": 60.0}))
        assert decision.profile == "powersave" and changes == []
        assert "npu-thermal" in decision.reason and "held" in decision.reason
        assert e.evaluate(Readings(temps_c=hot)) == (
            Decision("powersave", "npu-thermal 90 °C above 85 °C", "rule", 0), [])
    # the zone reads cool again: released
    decision, changes = e.evaluate(Readings(temps_c={"soc-thermal": 60.0, "npu-thermal": 70.0}))
    assert decision.profile == "balanced" and [c.held for c in changes] == [False]


def test_carry_over_keeps_unchanged_latches_and_a_known_pin() -> None:
    """A reload builds a new engine: a condition it still has keeps its latch (held inside
    its hysteresis), a changed one starts afresh, and a pin of a vanished profile goes."""
    hot = {"temp_above_c": 85.0, "hysteresis_c": 5.0, "profile": "powersave"}
    old = engine(hot)
    old.evaluate(Readings(temps_c={"soc-thermal": 86.0}))
    old.pin("performance", "uid 0")
    warm = Readings(temps_c={"soc-thermal": 82.0})
    same = engine({"on_battery": True, "profile": "balanced"}, hot)
    same.carry_over(old)
    assert same.pinned == "performance"
    same.pin(None, "uid 0")
    decision, changes = same.evaluate(warm)
    assert (decision.profile, decision.rule, changes) == ("powersave", 1, [])
    moved = engine({**hot, "temp_above_c": 84.0})
    moved.carry_over(old, latches=False)
    assert moved.pinned == "performance"
    moved.pin(None, "uid 0")
    assert moved.evaluate(warm)[0].profile == "balanced"
    gone = RuleEngine([], "balanced", ("balanced",))
    gone.carry_over(old)
    assert gone.pinned is None


def test_an_unknown_battery_keeps_a_held_rule_and_the_last_power_source() -> None:
    """A failed read of the fuel gauge (None) is unknown: what held stays held until a
    reading lets go, and what did not hold does not start to."""
    e = engine({"on_battery": True, "battery_below": 20.0, "profile": "powersave"})
    assert e.evaluate(Readings(on_battery=True, battery_percent=15))[0].profile == "powersave"
    for _ in range(2):
        decision, changes = e.evaluate(Readings())
        assert decision.profile == "powersave" and changes == []
        assert "battery unknown (held)" in decision.reason
        assert "power source unknown" in decision.reason
    decision, changes = e.evaluate(Readings(on_battery=True, battery_percent=30))
    assert decision.profile == "balanced" and [c.held for c in changes] == [False]
    assert e.evaluate(Readings())[0].profile == "balanced"
    # the source last read was mains: unknown now does not make it a battery
    mains = engine({"on_battery": True, "profile": "powersave"})
    mains.evaluate(Readings(on_battery=False))
    assert mains.evaluate(Readings())[0].profile == "balanced"
    moved = engine({"on_battery": False, "profile": "performance"})
    moved.carry_over(mains)
    assert moved.evaluate(Readings())[0].profile == "performance"
