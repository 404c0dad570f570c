"""A rule's ``model_variant = ""`` asks for the main model, as "" does in a profile: it
overrides the profile's variant, while a rule with no model_variant key leaves the profile's.

Pure policy: the config is parsed as the daemon parses it, so that None (key absent) and ""
(key set to the main model) reach ``chosen_variant`` the way they do in the daemon."""

from __future__ import annotations

from typing import Any

from wattgate.config import parse_config
from wattgate.policies.profiles import chosen_variant, resolve_all
from wattgate.policies.rules import Readings, RuleEngine


def variant_on_mains(rule: dict[str, Any]) -> str | None:
    """The variant chosen on mains under a "powersave" profile that runs "lite", with
    ``rule`` (on_battery = false) as the only rule: what the daemon's power side computes."""
    cfg = parse_config({
        "model": {"variants": {"lite": {"path": "lite.tflite"},
                                            "big": {"path": "big.tflite"}}},
        "power": {"profile": "powersave"},
        "profiles": {"powersave": {"model_variant": "lite"}},
        "rules": [{"name": "on mains", "on_battery": False, **rule}],
    })
    profiles = resolve_all(cfg)
    decision, _ = RuleEngine(cfg.rules, cfg.power.profile, profiles).evaluate(
        Readings(on_battery=False))
    assert decision.rule == 0  # the rule holds
    return chosen_variant(decision.model_variant,
                          profiles[decision.profile].settings("idle").model_variant)


def test_a_rule_with_an_empty_variant_runs_the_main_model() -> None:
    assert variant_on_mains({"model_variant": ""}) is None


def test_a_rule_without_a_variant_keeps_the_profiles() -> None:
    assert variant_on_mains({"profile": "powersave"}) == "lite"


def test_a_rule_naming_a_variant_overrides_the_profiles() -> None:
    assert variant_on_mains({"model_variant": "big"}) == "big"


def test_chosen_variant() -> None:
    """None is "not said": the next one down decides; "" is the main model, said."""
    assert chosen_variant(None, None) is None
    assert chosen_variant(None, "") is None
    assert chosen_variant(None, "lite") == "lite"
    assert chosen_variant("", "lite") is None
    assert chosen_variant("big", "lite") == "big"
