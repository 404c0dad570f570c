"""A light switched on that settles over more than one poll is one lighting change: one
report, with motion ignored and the gate's background relearnt until it has settled. The
policy on supplied times, then the sensor watch on a fake sysfs tree with a tsl2591 laid
out as its driver does."""

from __future__ import annotations

from pathlib import Path

from tests.test_sensors import Recorder, Tree
from wattgate.daemon.sensors import SensorSettings, SensorWatch
from wattgate.policies.lighting import LightingPolicy, LightingSettings, LightVerdict


def feed(readings: list[float], **settings: float) -> list[LightVerdict]:
    policy = LightingPolicy(LightingSettings(**settings))
    return [policy.update(lux, float(t)) for t, lux in enumerate(readings)]


def test_a_lamp_settling_over_two_polls_is_one_change_held_until_it_settles() -> None:
    for readings in ([5.0, 5.0, 150.0, 600.0, 600.0], [20.0, 20.0, 200.0, 450.0, 450.0]):
        verdicts = feed(readings, suppress_s=3.0)
        assert [v.change for v in verdicts] == [False, False, True, False, False], readings
        assert [v.extends for v in verdicts] == [False, False, False, True, False], readings
        step = verdicts[3]
        assert step.before == readings[0]  # the level the change started from
        assert step.suppress_until == 6.0  # 3 s after its last step, not after its first
        assert verdicts[4].suppress_until == 6.0


def test_a_light_switched_off_right_after_on_is_a_change_of_its_own() -> None:
    verdicts = feed([5.0, 5.0, 600.0, 4.0])
    assert [v.change for v in verdicts] == [False, False, True, True]
    assert not any(v.extends for v in verdicts)
    assert verdicts[3].before == 600.0


def test_a_second_switch_after_window_s_is_a_change_of_its_own() -> None:
    verdicts = feed([5.0, 5.0, 150.0, 150.0, 150.0, 150.0, 600.0], window_s=3.0)
    assert [v.change for v in verdicts] == [False] * 2 + [True] + [False] * 3 + [True]
    assert verdicts[6].before == 150.0


def test_the_watch_reports_one_change_and_hands_on_its_later_steps(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "sys")
    rec = Recorder()
    steps: list[LightVerdict] = []
    sensors = SensorWatch(tree.fs, SensorSettings(light_suppress_s=3.0), rec.on_lighting,
                          rec.on_pir, on_lighting_extended=steps.append)
    for t, lux in enumerate([5.0, 5.0, 150.0, 600.0, 600.0]):
        tree.tsl2591(lux)
        sensors.poll(float(t), 100.0 + t)
    assert [(v.before, v.lux) for v in rec.lighting] == [(5.0, 150.0)]
    assert [(v.before, v.lux, v.suppress_until) for v in steps] == [(5.0, 600.0, 6.0)]
    light = sensors.status()["light"]
    assert light["changes"] == 1 and light["last_change"] == 102.0
    assert sensors.motion_suppressed(5.9) and not sensors.motion_suppressed(6.0)
