"""Ambient light and PIR decisions. Pure: readings and caller-supplied monotonic times in,
verdicts out; no I/O, no clock, no threads.

Light: a lux reading that jumps by `jump_ratio` (either way) within `window_s` (or since
the reading before, for a sensor polled less often), and by at least `min_delta_lux`, is a
lighting change - lights switched, the IR illuminator and cut filter flipping at dusk -
that a frame-difference gate would otherwise take for motion over the whole frame
(Frigate's most reported false trigger, REFERENCE.md). The verdict asks the daemon to
recalibrate the gate's background and to ignore motion for `suppress_s`. Slow changes
(sunrise, clouds) are no jump: the gate's exposure fit follows them. The floor of
`min_delta_lux` keeps a dark room's sensor noise (0.5 -> 2 lx is x4) from counting.

A change is reported once, however many readings it spans: a lamp that settles over two
polls (5 -> 150 -> 600 lx) jumps twice. A jump the same way within `window_s` of a change's
last step is a further step of it (`extends`): no new change, but the gate is recalibrated
again and motion ignored for `suppress_s` from that step, since the light is still moving.
A jump the other way (a light switched off again) is a change of its own.

PIR: a passive infrared sensor's rising edge is a trigger that wakes the pipeline; the
trigger holds for `hold_s` so the pipeline stays awake while someone is around.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

DARK_LUX = 1.0  # added to both sides of a ratio, so 0 lx is not an infinite jump


@dataclass(frozen=True)
class LightingSettings:
    jump_ratio: float = 2.0  # a change by this factor or more (one photographic stop)
    min_delta_lux: float = 5.0  # and by at least this much
    window_s: float = 3.0  # over at most this long (a lamp warming up takes a reading or two)
    suppress_s: float = 3.0  # motion is ignored this long after a change

    def __post_init__(self) -> None:
        if self.jump_ratio <= 1.0 or self.min_delta_lux < 0 or self.window_s <= 0:
            raise ValueError("need jump_ratio > 1, min_delta_lux >= 0 and window_s > 0")


@dataclass(frozen=True)
class LightVerdict:
    lux: float
    change: bool  # a lighting change: recalibrate the gate's background
    suppress_until: Optional[float]  # monotonic time until which motion is no event
    before: Optional[float] = None  # the level the change started from
    extends: bool = False  # a further step of the change before: recalibrate, no new report


class LightingPolicy:
    """Turns successive lux readings into lighting changes; see the module docstring."""

    def __init__(self, settings: Optional[LightingSettings] = None) -> None:
        self.settings = settings or LightingSettings()
        self._recent: deque[tuple[float, float]] = deque()
        self._suppress_until: Optional[float] = None
        # The last change: when its latest step was, the level it started from, and whether
        # it was the light going up.
        self._change: Optional[tuple[float, float, bool]] = None

    def update(self, lux: float, now: float) -> LightVerdict:
        s = self.settings
        recent = self._recent
        # The reading before always stays: polled less often than window_s
        # (sensors.light_poll_s goes up to 60 s), every earlier reading would have aged out
        # and no switch, however bright, could ever be a change.
        while len(recent) > 1 and now - recent[0][0] > s.window_s:
            recent.popleft()
        jump_from = None
        for _, before in recent:
            # Below 0 lx is darkness read through a sensor's calibration offset: compared as
            # 0, or low + DARK_LUX turns zero or negative and any difference passes the ratio.
            low, high = sorted((max(0.0, before), max(0.0, lux)))
            if high - low >= s.min_delta_lux and (high + DARK_LUX) >= s.jump_ratio * (
                low + DARK_LUX
            ):
                jump_from = before
                break
        started_at, extends = jump_from, False  # the level the change started from
        if jump_from is not None:
            rising, started = lux > jump_from, jump_from
            last = self._change
            if last is not None and now - last[0] <= s.window_s and last[2] == rising:
                started, extends = last[1], True  # the light still settling: the same change
            started_at = started
            self._change = (now, started, rising)
            recent.clear()  # a later step is measured from here
            self._suppress_until = now + s.suppress_s
        recent.append((now, lux))
        suppress = self._suppress_until
        if suppress is not None and now >= suppress:
            suppress = self._suppress_until = None
        return LightVerdict(lux, jump_from is not None and not extends, suppress, started_at,
                            extends)


class PirTrigger:
    """Rising edges of a PIR output, and whether the last one is still holding."""

    def __init__(self, hold_s: float = 10.0) -> None:
        self.hold_s = hold_s
        self.triggers = 0
        self.last_trigger: Optional[float] = None
        self._active = False
        self._seen: Optional[float] = None  # the last time the output was high

    def first(self, active: bool, now: float) -> None:
        """The sensor's output as first read at `now`. High is someone already there, not
        someone arriving: the daemon restarted its sensor watch (a reload) while the output
        was high, or started with someone in view. It holds as usual, but is no trigger:
        the next one is the next rising edge."""
        self._active = active
        if active:
            self._seen = now

    def update(self, active: bool, now: float) -> bool:
        """The sensor's output at `now`; True when this is a new trigger (a rising edge)."""
        rising = active and not self._active
        self._active = active
        if active:
            self._seen = now
        if rising:
            self.triggers += 1
            self.last_trigger = now
        return rising

    def unreadable(self) -> None:
        """The output could not be read: it counts as gone low, so the hold ends hold_s
        after it was last read high, and a high read later is a new trigger (someone may
        have come meanwhile). Kept high, a PIR whose attribute stopped reading while high (a
        GPIO unexported, a USB GPIO expander unplugged, EIO) held someone around, and the
        clocks up, until a restart."""
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def holding(self, now: float, output_known: bool = True) -> bool:
        """The output is high, or was within the last hold_s. With `output_known` False (a
        read that has not answered for long) only the last hold_s counts, as if it were low."""
        if self._active and output_known:
            return True
        return self._seen is not None and now - self._seen < self.hold_s
