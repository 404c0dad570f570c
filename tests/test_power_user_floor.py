"""A floor the profile leaves unset (the user's, kept as found) comes down with a ceiling
set below it, and goes back up with it, without min > max on disk at any moment: cpufreq
before Linux 5.3 and devfreq without dev_pm_qos answer EINVAL to that."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import tree_snapshot
from tests.fixtures.boards import materialize
from tests.test_power_controller import CPU, HANG_S, MOTION, NPU, make, read
from wattgate.drivers.sysfs import OsIO
from wattgate.policies.target import complete

LITTLE = f"{CPU}/policy0"
PAIRS = {"scaling_min_freq": "scaling_max_freq", "scaling_max_freq": "scaling_min_freq",
         "min_freq": "max_freq", "max_freq": "min_freq"}


class LimitsCheckingIO(OsIO):
    """Plain file I/O that, after each write to a frequency limit, reads the limit beside
    it and keeps every (path, min, max) where min ended above max. The fake tree takes
    any value; this stands in for the older kernels' refusal."""

    def __init__(self) -> None:
        self.crossed: list[tuple[str, int, int]] = []
        self.limit_writes = 0

    def write_text(self, path: Path, data: str) -> None:
        super().write_text(path, data)
        other = PAIRS.get(path.name)
        if other is None:
            return
        self.limit_writes += 1
        values = {path.name: int(data), other: int(self.read_text(path.parent / other))}
        low, high = sorted(values, key=lambda name: "max" in name)
        if values[low] > values[high]:
            self.crossed.append((str(path), values[low], values[high]))


def test_complete_lowers_a_floor_left_as_found_to_the_ceiling() -> None:
    baseline = {f"{LITTLE}/scaling_min_freq": "1008000",
                f"{LITTLE}/scaling_max_freq": "1800000",
                f"{NPU}/min_freq": "600000000", f"{NPU}/max_freq": "1000000000"}
    driven = [f"{LITTLE}/scaling_max_freq", f"{NPU}/max_freq"]
    low = complete({f"{LITTLE}/scaling_max_freq": "816000", f"{NPU}/max_freq": "300000000"},
                   baseline, driven)
    assert low[f"{LITTLE}/scaling_min_freq"] == "816000"
    assert low[f"{NPU}/min_freq"] == "300000000"
    high = complete({f"{LITTLE}/scaling_max_freq": "1800000"}, baseline, driven)
    assert f"{LITTLE}/scaling_min_freq" not in high  # nothing to lower: left as found
    # once lowered, named again with its original so the switch gives it back
    back = complete({f"{LITTLE}/scaling_max_freq": "1800000"}, baseline,
                    [*driven, f"{LITTLE}/scaling_min_freq"])
    assert back[f"{LITTLE}/scaling_min_freq"] == "1008000"


def test_a_user_floor_follows_the_idle_ceiling_down_and_back(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    materialize("rk3588", root)
    (root / LITTLE / "scaling_min_freq").write_text("1008000\n")  # booted with a user floor
    before = tree_snapshot(root)
    io = LimitsCheckingIO()
    pc, _ = make(tmp_path, io=io)
    pc.start(0.0)
    assert pc.settle(HANG_S)
    assert read(root, f"{LITTLE}/scaling_max_freq") == "816000"  # balanced idle: 40 %
    assert read(root, f"{LITTLE}/scaling_min_freq") == "816000"  # lowered with it
    pc.on_gate(MOTION, 1.0)
    assert pc.settle(HANG_S)
    assert read(root, f"{LITTLE}/scaling_max_freq") == "1800000"
    assert read(root, f"{LITTLE}/scaling_min_freq") == "1008000"  # the user's again
    pc.tick(30.0)  # quiet long past the cooldown: idle again
    assert pc.settle(HANG_S)
    assert pc.activity.state == "idle"
    assert read(root, f"{LITTLE}/scaling_min_freq") == "816000"
    pc.stop()
    assert tree_snapshot(root) == before  # the user's floor is back, journal empty
    assert io.limit_writes > 0
    assert io.crossed == []
