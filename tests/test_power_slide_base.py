"""Load feedback never takes an active ceiling below what the same profile's idle state
allows for that knob: waking must not make the CPU slower than sleeping."""

from __future__ import annotations

from pathlib import Path

from tests.test_power_controller import CPU, HANG_S, MOTION, NPU, make, read
from tests.test_profiles import rk3588_caps
from wattgate.config import Config, parse_config
from wattgate.policies.load import LoadSample
from wattgate.policies.profiles import resolve_all
from wattgate.policies.target import build


def test_balanced_active_ceilings_stop_at_the_idle_ceilings(tmp_path: Path) -> None:
    """balanced's idle caps the CPUs at 40 % (816 MHz little, 1.2 GHz big) and the NPU at
    its lowest clock: at any level the active ceilings stay at or above those."""
    caps = rk3588_caps(tmp_path)
    balanced = resolve_all(Config())["balanced"]
    idle = build(balanced.idle, caps).knobs
    for level in (0.0, 0.3, 0.6, 1.0):
        active = build(balanced.active, caps, level, idle=balanced.idle).knobs
        for key in (f"{CPU}/policy0/scaling_max_freq", f"{CPU}/policy4/scaling_max_freq",
                    f"{CPU}/policy6/scaling_max_freq", f"{NPU}/max_freq"):
            assert int(active[key]) >= int(idle[key]), (level, key)
    bottom = build(balanced.active, caps, 0.0, idle=balanced.idle).knobs
    assert bottom[f"{CPU}/policy0/scaling_max_freq"] == "816000"
    assert bottom[f"{CPU}/policy4/scaling_max_freq"] == "1200000"
    assert bottom[f"{NPU}/max_freq"] == "300000000"  # idle's own: the NPU still slides


def test_a_ceiling_idle_leaves_unset_does_not_slide(tmp_path: Path) -> None:
    """Unset in idle, the knob keeps the board's own value there, which may be its top:
    below that the active state could be slower than idle."""
    caps = rk3588_caps(tmp_path)
    cfg = parse_config({"profiles": {"flat": {"active": {"cpu_max_khz": "100%"}}}})
    flat = resolve_all(cfg)["flat"]
    knobs = build(flat.active, caps, 0.0, idle=flat.idle).knobs
    assert knobs[f"{CPU}/policy4/scaling_max_freq"] == "2400000"


def test_a_quiet_event_keeps_the_cpus_at_or_above_idle_on_the_board(tmp_path: Path) -> None:
    """The daemon's own controller at a low duty: the big cluster stays at idle's 1.2 GHz
    while the NPU still comes down to its lowest clock."""
    pc, root = make(tmp_path)
    pc.start(0.0)
    pc.on_gate(MOTION, 0.0)
    pc.tick(0.9, LoadSample(0.9, 10, 0, 10.0))
    pc.on_gate(MOTION, 1.5)
    pc.tick(1.9, LoadSample(1.9, 25, 0, 25.0, 5.0))  # 15 ms of inference in a second
    assert pc.settle(HANG_S)
    assert pc.activity.state == "active"
    assert read(root, f"{NPU}/max_freq") == "300000000"
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "816000"
    assert read(root, f"{CPU}/policy4/scaling_max_freq") == "1200000"
    assert read(root, f"{CPU}/policy6/scaling_max_freq") == "1200000"
    pc.stop()
