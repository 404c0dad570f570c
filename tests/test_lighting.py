"""Lighting policy edge cases: readings a real sensor gives that the ratio test must survive."""

from __future__ import annotations

from wattgate.policies.lighting import LightingPolicy


def test_noise_around_a_negative_sensor_offset_is_not_a_change() -> None:
    # An IIO sensor whose calibration offset puts darkness a little below 0 lx: below 0 is
    # dark, and dark-room noise of a few lux is no lighting change (min_delta_lux 5).
    policy = LightingPolicy()
    readings = [-2.0, 3.5, -1.5, 3.6, -2.0, 2.9]
    assert [policy.update(lux, float(t)).change for t, lux in enumerate(readings)] == \
        [False] * len(readings)


def test_lights_on_from_below_zero_is_still_a_change() -> None:
    policy = LightingPolicy()
    assert not policy.update(-2.0, 0.0).change
    verdict = policy.update(80.0, 1.0)
    assert verdict.change and verdict.before == -2.0
