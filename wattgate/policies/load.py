"""Load feedback: move the active ceilings up when work queues up, down when it fits easily.

While active, the profile gives a floor and a ceiling for the CPU and NPU frequencies
(e.g. 0 % .. 100 %). Where inside that range the ceiling sits is the *level*, 0..1. The
controller works like the kernel's devfreq simple_ondemand and cpufreq ondemand governors
(Documentation/admin-guide/pm/cpufreq.rst: ``up_threshold`` 80), but on signals the
kernel cannot see:

* backlog: frames the inference thread never got to (stale drops in the newest-frame
  slot) mean the model is too slow for the frame rate - go to the top at once;
* duty: inference time over wall time, i.e. how much of each frame interval the model
  takes (30 ms inferences at 15 fps is a duty of 0.45);
* CPU: utilisation of the busiest CPU (psutil, passed in as a number), because capture,
  gating and pre/post-processing run on the CPU.

pressure = max(duty, cpu), then, once a tick:

* backlog: level = 1;
* pressure above UP (0.8): level = max(level + STEP_UP, level * pressure / TARGET);
* pressure below DOWN (0.5): level = level * pressure / TARGET, the proportional rule of
  devfreq's simple_ondemand (next = cur * load / (upthreshold - downdifferential / 2),
  drivers/devfreq/governor_simpleondemand.c) with TARGET = 0.6;
* in between: hold.

Why the proportional step down cannot overshoot: the ceiling is f = lo + L * (hi - lo),
and work at duty p takes p * f / f' of the interval at f'. With L' = L * p / TARGET,
f' = lo + L * p / TARGET * (hi - lo) >= f * p / TARGET whenever p <= TARGET, so the new
duty is at most TARGET (plus one OPP step, as the ceiling snaps down to a listed
frequency), below UP. The gap between DOWN and UP is the hysteresis.

Entering the active state starts at level 1 and forgets the last sample, so the clocks
are raised when the gate fires and held for at least one full tick before the first
measurement can bring them down. Pure: samples in, level out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

UP = 0.8
DOWN = 0.5
TARGET = 0.6
STEP_UP = 0.5


@dataclass(frozen=True)
class LoadSample:
    """Cumulative pipeline counters at one moment (the daemon's Counters), plus CPU use."""

    at: float  # monotonic seconds
    inferred: int = 0
    stale: int = 0  # frames replaced in the slot before the model took them
    infer_ms_total: float = 0.0
    cpu_percent: Optional[float] = None  # busiest CPU over the last interval, 0..100

    @classmethod
    def from_pipeline(
        cls, at: float, status: dict[str, object], cpu_percent: Optional[float] = None,
        busy_since: Optional[float] = None,
    ) -> LoadSample:
        """From ``Pipeline.status()``: inferred, stale_dropped, infer_ms_total; plus the
        time so far of the inference running since ``busy_since`` (monotonic, as ``at``).

        infer_ms_total grows only when an inference ends. An NPU inference longer than the
        tick ended in no tick's window, or in one of several: the model busy all along
        read as a duty of 0 in between, and the feedback lowered the clocks of the very
        work that was too slow. Counting the running one's time up to now makes the total
        continuous; when it ends, its whole time replaces the part counted so far."""
        total = status.get("infer_ms_total")
        total_ms = float(total) if isinstance(total, (int, float)) else 0.0
        if busy_since is not None and busy_since < at:
            total_ms += (at - busy_since) * 1000.0
        return cls(at, _int(status.get("inferred")), _int(status.get("stale_dropped")),
                   total_ms, cpu_percent)


def _int(value: object) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


@dataclass(frozen=True)
class Pressure:
    duty: float
    cpu: float
    backlog: int

    @property
    def value(self) -> float:
        return max(self.duty, self.cpu)


def pressure(prev: LoadSample, cur: LoadSample) -> Optional[Pressure]:
    """Load between two samples; None when no time passed or counters went backwards
    (a new pipeline after a reload restarts them)."""
    dt = cur.at - prev.at
    if dt <= 0 or cur.inferred < prev.inferred or cur.stale < prev.stale:
        return None
    busy_s = max(0.0, cur.infer_ms_total - prev.infer_ms_total) / 1000.0
    cpu = (cur.cpu_percent or 0.0) / 100.0
    return Pressure(min(1.0, busy_s / dt), min(1.0, cpu), cur.stale - prev.stale)


class LoadController:
    """The level (0..1) of the active ceilings inside the profile's range."""

    def __init__(self) -> None:
        self.level = 1.0
        self.last: Optional[Pressure] = None
        self._prev: Optional[LoadSample] = None

    def reset(self, level: float = 1.0) -> None:
        """Entering the active state: start high; the next sample only starts a window."""
        self.level = level
        self._prev = None

    def update(self, sample: LoadSample) -> float:
        """Feed the sample taken at this tick; returns the new level."""
        prev, self._prev = self._prev, sample
        if prev is None:
            return self.level
        p = pressure(prev, sample)
        self.last = p
        if p is None:
            return self.level
        if p.backlog > 0:
            self.level = 1.0
        elif p.value > UP:
            self.level = min(1.0, max(self.level + STEP_UP, self.level * p.value / TARGET))
        elif p.value < DOWN:
            self.level = max(0.0, self.level * p.value / TARGET)
        return self.level
