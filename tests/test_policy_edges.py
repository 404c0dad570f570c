"""Power policy defects at the edges of its inputs; each test failed before its fix."""

from __future__ import annotations

from wattgate.config import RuleConfig
from wattgate.policies.lighting import LightingPolicy
from wattgate.policies.rules import Readings, RuleEngine


def test_lights_switched_on_between_slow_polls_are_a_lighting_change() -> None:
    # sensors.light_poll_s may be up to 60 s: at 5 s the reading before is always older
    # than the 3 s window, and a room light switched on was never a lighting change, so
    # the gate took the whole frame brightening for motion.
    policy = LightingPolicy()
    assert not policy.update(2.0, 0.0).change
    verdict = policy.update(300.0, 5.0)
    assert verdict.change and verdict.before == 2.0


def test_a_reload_that_widens_the_hysteresis_keeps_a_held_rule_held() -> None:
    # A zone flapping the profile at 85 °C: the user widens hysteresis_c from 5 to 10 and
    # reloads at 78 °C, inside both. The latch was keyed by the hysteresis too, so the
    # reload started the rule afresh: released, back to the default profile while hot.
    known = ("balanced", "powersave")
    rule = RuleConfig(temp_above_c=85.0, hysteresis_c=5.0, profile="powersave")
    old = RuleEngine([rule], "balanced", known)
    old.evaluate(Readings(temps_c={"soc-thermal": 86.0}))
    assert old.evaluate(Readings(temps_c={"soc-thermal": 81.0}))[0].profile == "powersave"
    wider = RuleEngine([rule.model_copy(update={"hysteresis_c": 10.0})], "balanced", known)
    wider.carry_over(old)
    decision, changes = wider.evaluate(Readings(temps_c={"soc-thermal": 78.0}))
    assert (decision.profile, changes) == ("powersave", [])


def test_a_reload_that_widens_the_light_hysteresis_keeps_a_held_rule_held() -> None:
    known = ("balanced", "inspection")
    rule = RuleConfig(lux_below=10.0, hysteresis_lux=2.0, profile="inspection")
    old = RuleEngine([rule], "balanced", known)
    old.evaluate(Readings(lux=5.0))
    wider = RuleEngine([rule.model_copy(update={"hysteresis_lux": 8.0})], "balanced", known)
    wider.carry_over(old)
    decision, changes = wider.evaluate(Readings(lux=14.0))
    assert (decision.profile, changes) == ("inspection", [])


def test_a_held_latch_wins_over_one_at_the_same_trip_with_less_hysteresis() -> None:
    known = ("balanced", "powersave")
    narrow = RuleConfig(temp_above_c=85.0, hysteresis_c=2.0, profile="powersave")
    wide = narrow.model_copy(update={"hysteresis_c": 10.0})
    old = RuleEngine([wide, narrow], "balanced", known)
    old.evaluate(Readings(temps_c={"soc-thermal": 86.0}))
    old.evaluate(Readings(temps_c={"soc-thermal": 80.0}))  # wide holds, narrow released
    new = RuleEngine([wide], "balanced", known)
    new.carry_over(old)
    assert new.evaluate(Readings(temps_c={"soc-thermal": 80.0}))[0].profile == "powersave"
