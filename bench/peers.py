"""The peers as gates: MOG2 and the Frigate-style detector behind the gate's own rule.

A detector only says "motion here"; what a gate costs and misses also depends on what is done
with that: cooldown after motion, a heartbeat when idle, no judging while the background is
learnt. `Downstream` applies that rule, the gate's own `inference_reason` (motion infers; so
do the `cooldown_s` after it and a heartbeat every `heartbeat_s`), so the three are compared on
their detection alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from bench.frigate import FrigateStyleDetector
from wattgate.policies.gating import EPS, inference_reason


@dataclass(frozen=True)
class PeerVerdict:
    """What synthetic.score_gate reads from a verdict."""

    infer: bool
    reason: str
    motion: bool


class Downstream:
    """Cooldown, heartbeat and a warm-up window, as the gate applies them to its own motion."""

    def __init__(self, cooldown_s: float, heartbeat_s: float, warmup_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.heartbeat_s = heartbeat_s
        self.warmup_s = warmup_s
        self._first: Optional[float] = None
        self._last_motion: Optional[float] = None
        self._last_infer: Optional[float] = None

    def decide(self, now: float, motion: bool) -> PeerVerdict:
        if self._first is None:
            self._first = self._last_infer = now
        if now - self._first < self.warmup_s - EPS:  # learning the scene: nothing judged
            return PeerVerdict(False, "calibrating", False)
        assert self._last_infer is not None
        reason = inference_reason(now, motion, self._last_motion, self._last_infer,
                                  self.cooldown_s, self.heartbeat_s)
        if motion:
            self._last_motion = now
        if reason is None:
            return PeerVerdict(False, "idle", False)
        self._last_infer = now
        return PeerVerdict(True, reason, motion)


class Mog2Motion:
    """OpenCV's MOG2 used the way it usually is: on the full frame, defaults, shadows kept
    out of the foreground. Motion = a foreground blob (after the same 3x3 dilation) larger
    than the gate's `min_area`, scaled from the gate's 100 rows to the frame's rows."""

    def __init__(self, min_area: float = 10.0, rows: int = 100) -> None:
        self.subtractor = cv2.createBackgroundSubtractorMOG2()
        self.min_area = min_area
        self.rows = rows
        self._kernel = np.ones((3, 3), np.uint8)

    def apply(self, frame: Any) -> Any:
        """The raw foreground mask (255 foreground, 127 shadow): what the speed bench times."""
        return self.subtractor.apply(frame)

    def motion(self, frame: Any) -> bool:
        mask = self.apply(frame)
        _, fg = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)
        fg = cv2.dilate(fg, self._kernel)
        scale = (frame.shape[0] / self.rows) ** 2
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return any(cv2.contourArea(c) > self.min_area * scale for c in contours)


class FrigateMotion:
    """The Frigate-style detector: motion = at least one box."""

    def __init__(self) -> None:
        self.detector = FrigateStyleDetector()

    def motion(self, frame: Any) -> bool:
        return bool(self.detector.detect_bgr(frame))
