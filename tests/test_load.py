"""Load feedback: pressure from pipeline counters and CPU, and the level it leads to."""

from __future__ import annotations

import pytest

from wattgate.daemon.pipeline import Counters
from wattgate.policies.load import DOWN, TARGET, UP, LoadController, LoadSample, pressure


def sample(at: float, inferred: int = 0, stale: int = 0, infer_ms: float = 0.0,
           cpu: float = 0.0) -> LoadSample:
    return LoadSample(at, inferred, stale, infer_ms, cpu)


def test_pressure_is_inference_duty_or_cpu_whichever_is_higher() -> None:
    p = pressure(sample(0.0, 0, 0, 0.0), sample(1.0, 15, 0, 450.0, cpu=20.0))
    assert p is not None
    assert p.duty == pytest.approx(0.45) and p.cpu == pytest.approx(0.2) and p.backlog == 0
    assert p.value == pytest.approx(0.45)
    p = pressure(sample(0.0), sample(2.0, 10, 3, 100.0, cpu=90.0))
    assert p is not None and p.backlog == 3 and p.value == pytest.approx(0.9)


def test_no_pressure_without_time_or_when_counters_restart() -> None:
    assert pressure(sample(1.0), sample(1.0, 5)) is None
    assert pressure(sample(0.0, 100), sample(1.0, 3)) is None  # a new pipeline after reload


def test_from_pipeline_status() -> None:
    s = LoadSample.from_pipeline(
        5.0, {"frames": 100, "inferred": 20, "stale_dropped": 2, "infer_ms_total": 250.0}, 30.0)
    assert (s.at, s.inferred, s.stale, s.infer_ms_total, s.cpu_percent) == (
        5.0, 20, 2, 250.0, 30.0)
    assert LoadSample.from_pipeline(1.0, {}).inferred == 0


def test_the_duty_stays_right_after_a_million_inferences() -> None:
    """The sample was rebuilt from the status's mean, rounded to 3 decimals, times the
    count: after ~18 h at 15 fps that is off by up to 500 ms, and a second's duty read as
    0 (the ceiling dropped to the floor) or 1."""
    counters = Counters(inferred=1_000_000, infer_ms_total=12.3454e6)
    duties = []
    prev = LoadSample.from_pipeline(0.0, counters.snapshot(0))
    for second in range(1, 600):
        for ms in (10.0, 11.0, 12.0, 13.0, 14.0) * 3:  # 15 inferences, 180 ms
            counters.inferred += 1
            counters.infer_ms_total += ms
        cur = LoadSample.from_pipeline(float(second), counters.snapshot(0))
        found = pressure(prev, cur)
        assert found is not None
        duties.append(found.duty)
        prev = cur
    assert min(duties) == pytest.approx(0.18, abs=1e-6)
    assert max(duties) == pytest.approx(0.18, abs=1e-6)


def test_an_inference_longer_than_the_tick_is_busy_in_every_tick() -> None:
    """A 2.5 s NPU inference at one-second ticks: the model is busy throughout. Counted
    only when it ended, two ticks of three read a duty of 0 and the feedback lowered the
    clocks of the work that was too slow."""
    counters = Counters()
    counters.busy_since = 0.0
    duties = []
    prev = LoadSample.from_pipeline(0.0, counters.snapshot(0), busy_since=counters.busy_since)
    for tick in range(1, 8):
        at = float(tick)
        if at >= counters.busy_since + 2.5:  # it ended; the next one started at once
            counters.busy_since += 2.5
            counters.inferred += 1
            counters.infer_ms_total += 2500.0
        cur = LoadSample.from_pipeline(at, counters.snapshot(0), busy_since=counters.busy_since)
        found = pressure(prev, cur)
        assert found is not None
        duties.append(found.duty)
        prev = cur
    assert duties == pytest.approx([1.0] * 7)


def feed(c: LoadController, *duties: float, start: float = 0.0) -> list[float]:
    """One sample a second with the given duty each; the levels after each."""
    levels = []
    t, ms = start, 0.0
    c.update(sample(t, 0, 0, ms))
    for i, duty in enumerate(duties, 1):
        t += 1.0
        ms += duty * 1000.0
        levels.append(c.update(sample(t, i, 0, ms)))
    return levels


def test_starts_high_and_comes_down_proportionally_when_quiet() -> None:
    c = LoadController()
    assert c.level == 1.0
    levels = feed(c, 0.06, 0.06)
    assert levels[0] == pytest.approx(0.06 / TARGET)
    assert levels[1] == pytest.approx((0.06 / TARGET) ** 2)


def test_holds_between_down_and_up() -> None:
    c = LoadController()
    c.level = 0.5
    assert feed(c, (DOWN + UP) / 2, DOWN, UP) == [0.5, 0.5, 0.5]


def test_rises_fast_when_busy_and_jumps_to_the_top_on_backlog() -> None:
    c = LoadController()
    c.level = 0.0
    assert feed(c, 0.9) == [pytest.approx(0.5)]  # at least STEP_UP out of the bottom
    c.level = 0.8
    assert feed(c, 0.9, start=10.0) == [1.0]
    c.level = 0.2
    c.update(sample(20.0, 0, 0))
    assert c.update(sample(21.0, 5, 1)) == 1.0  # a stale frame: the model fell behind


def test_busy_cpu_raises_like_a_busy_model() -> None:
    c = LoadController()
    c.level = 0.1
    c.update(sample(0.0, cpu=95.0))
    assert c.update(sample(1.0, cpu=95.0)) == pytest.approx(0.6)


def test_reset_starts_high_and_waits_a_full_window() -> None:
    c = LoadController()
    feed(c, 0.01, 0.01)
    assert c.level < 0.01
    c.reset()
    assert c.level == 1.0
    assert c.update(sample(100.0, 50, 0, 10.0)) == 1.0  # first sample only opens a window
    assert c.update(sample(101.0, 60, 0, 20.0)) < 1.0


def test_never_leaves_zero_to_one() -> None:
    c = LoadController()
    levels = feed(c, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0)
    assert all(0.0 <= v <= 1.0 for v in levels)
