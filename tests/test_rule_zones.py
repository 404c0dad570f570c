"""A temperature rule whose zone is not one of the board's zone types never holds: the
controller says so at start and at each reload, in the log and in the status's notes.

The power controller runs on the fake sysfs tree of a real board (rk3588), as in
tests/test_power_controller.py; nothing is mocked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.boards import materialize
from wattgate.config import RuleConfig, parse_config
from wattgate.daemon.power import PowerController
from wattgate.policies.rules import unknown_zones

SOC_TEMP = "devices/virtual/thermal/thermal_zone0/temp"  # type soc-thermal


def config(tmp_path: Path, rules: list[dict[str, Any]]) -> Any:
    root = tmp_path / "sys"
    if not root.exists():
        materialize("rk3588", root)
    return parse_config({"power": {"sysfs_root": str(root),
                                   "journal_dir": str(tmp_path / "journal")},
                         "rules": rules})


def zone_notes(controller: PowerController) -> list[str]:
    return [n for n in controller.status().get("notes", []) if "zone" in n]


def test_unknown_zones_names_the_rules_no_zone_can_trip() -> None:
    rules = [RuleConfig(temp_above_c=80, zone="thermal_zone0", profile="powersave"),
             RuleConfig(temp_above_c=80, zone="soc-thermal", profile="powersave"),
             RuleConfig(battery_below=20, profile="powersave"),
             RuleConfig(temp_above_c=90, profile="powersave")]
    assert unknown_zones(rules, ["soc-thermal", "gpu-thermal"]) == [0]
    assert unknown_zones(rules, []) == [0, 1, 3]  # no zones: not even "any zone" reads


def test_a_rule_naming_a_zone_directory_is_warned_of_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = PowerController(config(tmp_path, [
        {"name": "hot", "temp_above_c": 80, "zone": "thermal_zone0", "profile": "powersave"},
        {"temp_above_c": 85, "zone": "soc-thermal", "profile": "powersave"},
    ]))
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        c.start(0.0)
    try:
        warned = [r.getMessage() for r in caplog.records if "thermal_zone0" in r.getMessage()]
        assert len(warned) == 1
        assert "rule 0 (hot)" in warned[0] and "soc-thermal" in warned[0]
        assert "rule 1" not in warned[0]
        (notes,) = zone_notes(c)
        assert "rule 0 (hot)" in notes and "'thermal_zone0'" in notes and "npu-thermal" in notes
    finally:
        c.stop()


def test_reload_checks_the_new_rules_zones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = PowerController(config(tmp_path, [{"temp_above_c": 80, "zone": "soc-thermal",
                                           "profile": "powersave"}]))
    c.start(0.0)
    try:
        assert zone_notes(c) == []
        with caplog.at_level(logging.WARNING, logger="wattgate.power"):
            c.reload(config(tmp_path, [{"temp_above_c": 80, "zone": "cpu-thermal",
                                        "profile": "powersave"}]), 1.0)
        assert any("'cpu-thermal'" in r.getMessage() for r in caplog.records)
        (note,) = zone_notes(c)
        assert note.startswith("rule 0 never holds")
        (tmp_path / "sys" / SOC_TEMP).write_text("95000\n")
        c.tick(2.0)  # the notes stay with the target's recomputed ones
        assert zone_notes(c) == [note]
        c.reload(config(tmp_path, [{"temp_above_c": 80, "zone": "soc-thermal",
                                    "profile": "powersave"}]), 3.0)
        assert zone_notes(c) == []  # fixed by the reload: the note goes
        c.tick(4.0)
        assert c.decision.profile == "powersave"
    finally:
        c.stop()
