"""A reload that drops a rule whose condition is held says so with the rule's release
event, so the latch stream stays hot/cool, held/released, low/ok in pairs: re-adding the
rule later sends its "hot" again, and without the release a client saw two in a row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.test_power_controller import make
from wattgate.config import RuleConfig, parse_config
from wattgate.policies.rules import Latch, Readings, RuleEngine

KNOWN = ("balanced", "powersave")
HOT = {"temp_above_c": 80.0, "hysteresis_c": 5.0, "profile": "powersave", "name": "hot-soc"}
DARK = {"lux_below": 10.0, "profile": "powersave"}
LOW = {"battery_below": 20.0, "profile": "powersave"}


def engine(*rules: dict[str, Any]) -> RuleEngine:
    return RuleEngine([RuleConfig.model_validate(r) for r in rules], "balanced", KNOWN)


def test_carry_over_releases_the_held_latches_no_new_rule_keeps() -> None:
    old = engine(HOT, DARK, LOW)
    _, held = old.evaluate(Readings(temps_c={"soc-thermal": 86.0}, lux=3.0,
                                    battery_percent=12.0))
    assert [(latch.kind, latch.held) for latch in held] == [
        ("thermal", True), ("light", True), ("battery", True)]
    new = engine({**LOW, "profile": "balanced"})  # the battery condition stays, same level
    dropped = new.carry_over(old)
    assert dropped == [Latch(0, "thermal", False, "rule removed by reload"),
                       Latch(1, "light", False, "rule removed by reload")]
    # the kept one carries its hold: no second "low", and no release
    _, changes = new.evaluate(Readings(temps_c={"soc-thermal": 86.0}, lux=3.0,
                                       battery_percent=12.0))
    assert changes == []


def test_carry_over_without_latches_releases_every_held_one() -> None:
    old = engine(HOT)
    old.evaluate(Readings(temps_c={"soc-thermal": 86.0}))
    assert engine(HOT).carry_over(old, latches=False) == [
        Latch(0, "thermal", False, "rule started afresh by reload")]
    assert engine(HOT).carry_over(engine(HOT)) == []  # nothing held, nothing to release


def test_a_reload_that_drops_a_hot_rule_sends_its_cool(tmp_path: Path) -> None:
    pc, root = make(tmp_path, rules=[HOT])
    (root / "devices/virtual/thermal/thermal_zone0/temp").write_text("86000\n")
    events = pc.start(0.0)
    assert {"kind": "thermal", "state": "hot", "detail": "any zone 86 °C",
            "rule": "hot-soc"} in events
    power = {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")}
    events = pc.reload(parse_config({"power": power}), 1.0)
    latches = [e for e in events if e["kind"] == "thermal"]
    assert latches == [{"kind": "thermal", "state": "cool",
                        "detail": "rule removed by reload", "rule": "hot-soc"}]
    assert [e["profile"] for e in events if e["kind"] == "profile_change"] == ["balanced"]
    events = pc.reload(parse_config({"power": power, "rules": [HOT]}), 2.0)
    assert [e["state"] for e in events if e["kind"] == "thermal"] == ["hot"]
    pc.stop()
