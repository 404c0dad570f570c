"""A pin's release and the variant a reload will want are judged on the readings the rules
judge each tick: with two batteries, their combined charge, not the first battery's alone
(the one the status shows). Fake intel-mtl trees with a second battery; real files, real
symlinks, the real power controller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_power_inputs_edges import intel_with_bat1
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController

LOW = {"battery_below": 20.0, "profile": "powersave"}
LITE = {"variants": {"lite": {"path": "/models/lite.tflite"}}}


def two_batteries(tmp_path: Path) -> Path:
    """intel-mtl with an idle BAT0 at 30 % and a second battery of the same size, BAT1, in
    use at 5 %: 17.5 % left in all, below a 20 % rule that BAT0 alone is well above."""
    return intel_with_bat1(tmp_path, {"capacity": "30", "status": "Unknown", "power_now": "0"},
                           {"capacity": "5", "status": "Discharging", "power_now": "9000000"})


def config(tmp_path: Path, root: Path, **sections: Any) -> Any:
    return parse_config({"power": {"sysfs_root": str(root),
                                   "journal_dir": str(tmp_path / "journal")}, **sections})


def test_a_released_pin_keeps_the_low_battery_profile_the_batteries_hold(
    tmp_path: Path,
) -> None:
    """The release judged BAT0's 30 %: it dropped to the default profile and wrote its
    settings, and the next tick, judging 17.5 %, reported the battery low again and went
    back to powersave."""
    root = two_batteries(tmp_path)
    pc = PowerController(config(tmp_path, root, rules=[LOW]))
    try:
        pc.start(0.0)
        pc.tick(1.0)
        assert pc.decision.profile == "powersave"
        assert pc.status()["battery"]["percent"] == 30  # the status shows BAT0
        pc.pin("performance", "alice")
        assert pc.decision.profile == "performance"
        pc.pin(None, "alice")
        assert pc.decision.profile == "powersave"
        assert pc.decision.reason == "battery 17.5 % below 20 %"
        events = pc.drain_events() + pc.tick(2.0)
        assert [(e["kind"], e.get("profile") or e.get("state")) for e in events] == [
            ("profile_change", "performance"), ("profile_change", "powersave")]
        assert pc.decision.profile == "powersave"
    finally:
        pc.stop()


def test_the_variant_a_reload_will_want_counts_every_battery(tmp_path: Path) -> None:
    """The new config runs "lite" below 20 %. Asked before the reload, the answer judged
    BAT0's 30 % and was the main model; the reload itself then picked "lite"."""
    root = two_batteries(tmp_path)
    pc = PowerController(config(tmp_path, root, model=LITE))
    try:
        pc.start(0.0)
        pc.tick(1.0)
        low = config(tmp_path, root, model=LITE,
                     rules=[{"battery_below": 20.0, "model_variant": "lite"}])
        assert pc.variant_under(low) == "lite"
        pc.reload(low, 2.0)
        assert pc.model_variant == "lite"
    finally:
        pc.stop()


@pytest.mark.parametrize("rule", [LOW, {"on_battery": True, "profile": "powersave"}])
def test_before_the_first_read_a_release_knows_no_battery(
    tmp_path: Path, rule: dict[str, Any],
) -> None:
    """Not started, nothing has been read: a release judges an unknown battery, which holds
    no rule, and the default profile stays."""
    root = two_batteries(tmp_path)
    pc = PowerController(config(tmp_path, root, rules=[rule]))
    pc.pin("performance", "alice")
    pc.pin(None, "alice")
    assert (pc.decision.profile, pc.decision.source) == ("balanced", "default")
