"""The adaptive activity state machine: idle, active, cooldown.

    idle --trigger--> active --frame without motion--> cooldown --cooldown_s quiet--> idle
                        ^                                  |
                        +------------- trigger ------------+

A trigger is the gate reporting motion or a client's snap, each counted only when the
profile's ``wake_on`` lists it (the inspection profile wakes on snaps alone). Active and
cooldown both use the profile's [active] settings; cooldown is reported separately so a
status shows that the scene has gone quiet and when the clocks will drop.

The caller reports every gated frame and a tick once a second; the machine keeps the
time of the last trigger and never reads a clock. Transitions are returned so that the
caller can apply the new settings before the triggering frame reaches the model - which
is the point: the NPU is raised when the gate fires, not after the first slow inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Activity = Literal["idle", "active", "cooldown"]
Trigger = Literal["motion", "snap"]
EPS = 1e-6  # tolerance on caller timestamps (frame times are not exact binary fractions)


@dataclass(frozen=True)
class Transition:
    before: Activity
    after: Activity
    reason: str
    at: float

    @property
    def settings_changed(self) -> bool:
        """Idle uses [idle], active and cooldown share [active]: only idle edges matter."""
        return (self.before == "idle") != (self.after == "idle")


class ActivityMachine:
    """Pure state machine; not thread-safe by itself (the controller holds a lock)."""

    def __init__(
        self, cooldown_s: float, wake_on: frozenset[str] = frozenset({"motion", "snap"})
    ) -> None:
        self.cooldown_s = cooldown_s
        self.wake_on = wake_on
        self.state: Activity = "idle"
        self.since: Optional[float] = None
        self.last_trigger: Optional[float] = None
        self.reason = "start"

    @property
    def settings_state(self) -> Literal["idle", "active"]:
        return "idle" if self.state == "idle" else "active"

    def configure(self, cooldown_s: float, wake_on: frozenset[str]) -> None:
        """A new profile: new cooldown and wake-up sources, same state."""
        self.cooldown_s = cooldown_s
        self.wake_on = wake_on

    def _go(self, after: Activity, reason: str, now: float) -> Transition:
        change = Transition(self.state, after, reason, now)
        self.state, self.since, self.reason = after, now, reason
        return change

    def trigger(self, kind: Trigger, now: float) -> Optional[Transition]:
        """Motion or a snap at ``now``; a transition when it wakes or revives the state."""
        if kind not in self.wake_on:
            return None
        # Never moved back: the capture thread stamps a trigger with its frame's grab time,
        # the event loop a snap with the time it arrived, so one can come in stamped before
        # the other; going back would end the hold early.
        last = self.last_trigger
        self.last_trigger = now if last is None else max(last, now)
        if self.state == "active":
            return None
        reason = kind if self.state == "idle" else f"{kind} again"
        return self._go("active", reason, now)

    def quiet(self, now: float) -> Optional[Transition]:
        """A frame without a trigger: active becomes cooldown, a long quiet becomes idle."""
        if self.state == "active":
            return self._go("cooldown", "no motion", now)
        return self.tick(now)

    def tick(self, now: float) -> Optional[Transition]:
        """Time passes (the once-a-second tick, or a frame): cooldown ends after cooldown_s.

        Active with no frames at all (a camera that stopped) also ends, so a lost camera
        never leaves the NPU held at full clocks.
        """
        if self.state == "idle" or self.last_trigger is None:
            return None
        if now - self.last_trigger >= self.cooldown_s - EPS:
            return self._go("idle", f"no motion for {self.cooldown_s:g} s", now)
        return None

    def remaining(self, now: float) -> Optional[float]:
        """Seconds until idle, while active or cooling down."""
        if self.state == "idle" or self.last_trigger is None:
            return None
        return max(0.0, self.cooldown_s - (now - self.last_trigger))
