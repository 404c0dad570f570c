"""Power policy defects found by hunting: each test failed on the code before its fix."""

from __future__ import annotations

from wattgate.policies.lighting import LightingPolicy


def test_lights_switched_on_between_slow_polls_are_a_lighting_change() -> None:
    # sensors.light_poll_s may be up to 60 s: at 5 s the reading before is always older
    # than the 3 s window, and a room light switched on was never a lighting change, so
    # the gate took the whole frame brightening for motion.
    policy = LightingPolicy()
    assert not policy.update(2.0, 0.0).change
    verdict = policy.update(300.0, 5.0)
    assert verdict.change and verdict.before == 2.0
