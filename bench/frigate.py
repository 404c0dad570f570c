"""A Frigate-style motion detector: the reference peer the gate is measured against.

Written here from the published algorithm of Frigate's improved motion detector as
REFERENCE.md summarises it ("Motion gating"), with its defaults; where the summary is silent
(the blur's radius, which contours count towards pct_motion) it follows Frigate's published
frigate/motion/improved_motion.py, none of whose code is copied here:

1. Y plane resized with nearest neighbour to `frame_height` = 100 rows.
2. Contrast: the 4th and 96th percentiles of the small frame, averaged over the last 50
   frames; the frame is clipped to that range and stretched to 0..255.
3. Gaussian blur, sigma 1, radius 1: a 3x3 kernel (Frigate calls scipy's
   `gaussian_filter(sigma=1, radius=1)`).
4. Absolute difference against an accumulateWeighted background; threshold 30; one 3x3
   dilation; external contours; those with area > `contour_area` = 10 become boxes.
5. `pct_motion` = the area of all contours, small ones included (Frigate adds each into
   `total_contour_area` before the size test) / small-frame area. Above
   `lightning_threshold` = 0.8 it recalibrates instead of reporting motion, and is
   calibrated again once pct_motion < 0.05 with at most 4 boxes; no boxes are reported
   while calibrating.
6. Background alpha 0.2 while calibrating, `frame_alpha` = 0.01 after; while boxes are
   found, the frame is blended in only after 10 consecutive motion frames.

Choices the summary leaves open, made to favour the peer rather than handicap it: the first
frame seeds the background (instead of starting from black) and fills the contrast history
(so the stretch does not drift over the first 50 frames while the background, at alpha 0.01,
cannot follow: that drift alone would read as motion), and a strided Y plane
(YUYV) is sampled with index arrays, as the gate does, instead of being copied first. A BGR
frame is sampled first and converted after, the same cheap path the gate takes; Frigate
itself always receives I420, whose Y plane is free.
"""

from __future__ import annotations

from typing import Any, Optional

import cv2
import numpy as np
import numpy.typing as npt
from cv2.typing import MatLike

Box = tuple[int, int, int, int]
Image = MatLike  # uint8

FRAME_HEIGHT = 100
THRESHOLD = 30
CONTOUR_AREA = 10
FRAME_ALPHA = 0.01
CALIBRATION_ALPHA = 0.2
LIGHTNING_THRESHOLD = 0.8
CALIBRATED_PCT = 0.05  # calibration ends below this much motion...
CALIBRATED_BOXES = 4  # ...with at most this many boxes
CONTRAST_HISTORY = 50
CONTRAST_PERCENTILES = (4.0, 96.0)
BLUR_SIGMA = 1.0
BLUR_SIZE = (3, 3)  # radius 1
PERSIST_FRAMES = 10  # consecutive motion frames before the background takes them in


class FrigateStyleDetector:
    """Frame in, motion boxes (in source pixels) out; stateful, one per camera."""

    def __init__(self, frame_height: int = FRAME_HEIGHT, threshold: int = THRESHOLD,
                 contour_area: float = CONTOUR_AREA, frame_alpha: float = FRAME_ALPHA,
                 lightning_threshold: float = LIGHTNING_THRESHOLD) -> None:
        self.frame_height = frame_height
        self.threshold = threshold
        self.contour_area = contour_area
        self.frame_alpha = frame_alpha
        self.lightning_threshold = lightning_threshold
        self.calibrating = True
        self.pct_motion = 0.0
        self._background: Optional[npt.NDArray[np.float32]] = None
        self._contrast: Optional[npt.NDArray[np.float32]] = None
        self._contrast_at = 0
        self._motion_frames = 0
        self._kernel = np.ones((3, 3), np.uint8)
        self._size: tuple[int, int] = (0, 0)
        self._source: tuple[int, int] = (0, 0)
        self._rows: Any = None
        self._cols: Any = None

    def _small_size(self, width: int, height: int) -> tuple[int, int]:
        if self._source != (width, height):
            rows = max(1, min(self.frame_height, height))
            self._size = (max(1, round(width * rows / height)), rows)
            self._source = (width, height)
            self._rows = self._cols = None
        return self._size

    def detect_bgr(self, frame: Image) -> list[Box]:
        height, width = frame.shape[:2]
        size = self._small_size(width, height)
        small = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
        return self._detect(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))

    def detect_luma(self, luma: Image, source_size: Optional[tuple[int, int]] = None
                    ) -> list[Box]:
        """A Y plane of any resolution; boxes are scaled to source_size (w, h)."""
        height, width = luma.shape[:2]
        src = source_size or (width, height)
        size = self._small_size(*src)
        if luma.strides[1] != luma.itemsize:  # a view into YUYV: sample it, do not copy it
            if self._rows is None or self._rows.shape[0] != size[1]:
                self._rows = np.minimum(np.arange(size[1]) * height // size[1], height - 1)
                self._cols = np.minimum(np.arange(size[0]) * width // size[0], width - 1)
            small = luma[self._rows[:, None], self._cols[None, :]]
        else:
            small = cv2.resize(luma, size, interpolation=cv2.INTER_NEAREST)
        return self._detect(small)

    def _stretch(self, small: Image) -> Image:
        low, high = np.percentile(small, CONTRAST_PERCENTILES)
        if self._contrast is None:
            self._contrast = np.empty((CONTRAST_HISTORY, 2), np.float32)
            self._contrast[:] = (low, high) if low < high else (0.0, 255.0)
        elif low < high:  # a single-colour frame keeps the old range
            self._contrast[self._contrast_at] = (low, high)
            self._contrast_at = (self._contrast_at + 1) % CONTRAST_HISTORY
        lo, hi = (float(v) for v in self._contrast.mean(axis=0))
        scale = 255.0 / max(hi - lo, 1.0)
        clipped = np.clip(small, lo, hi)
        stretched: Image = cv2.convertScaleAbs(clipped, alpha=scale, beta=-lo * scale)
        return stretched

    def _detect(self, small: Image) -> list[Box]:
        # Frigate's improved_motion.py: gaussian_filter(frame, sigma=1, radius=1), scipy's
        # default "reflect" border (REFERENCE.md, "Motion gating", blur sigma 1). OpenCV's
        # 3x3 kernel with BORDER_REFLECT is the same filter at a tenth of scipy's cost; it
        # rounds where scipy truncates each pass, at most 2 levels apart, against a threshold
        # of 30 (and the background goes through the same blur).
        frame = cv2.GaussianBlur(self._stretch(small), BLUR_SIZE, BLUR_SIGMA,
                                 borderType=cv2.BORDER_REFLECT)
        if self._background is None or self._background.shape != frame.shape:
            self._background = frame.astype(np.float32)
            self.calibrating = True
        background = self._background
        delta = cv2.absdiff(cv2.convertScaleAbs(background), frame)
        _, mask = cv2.threshold(delta, self.threshold, 255, cv2.THRESH_BINARY)
        mask = cv2.dilate(mask, self._kernel, iterations=1)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = frame.shape
        fx, fy = self._source[0] / w, self._source[1] / h
        boxes: list[Box] = []
        area = 0.0
        for contour in contours:
            a = cv2.contourArea(contour)
            area += a  # every contour counts towards pct_motion, as in Frigate's code
            if a > self.contour_area:
                x, y, bw, bh = cv2.boundingRect(contour)
                boxes.append((int(x * fx), int(y * fy), int((x + bw) * fx), int((y + bh) * fy)))
        self.pct_motion = area / (w * h)
        if self.pct_motion > self.lightning_threshold:
            self.calibrating = True
        if self.calibrating:
            if self.pct_motion < CALIBRATED_PCT and len(boxes) <= CALIBRATED_BOXES:
                self.calibrating = False
            boxes = []
        alpha = CALIBRATION_ALPHA if self.calibrating else self.frame_alpha
        if boxes:
            self._motion_frames += 1
            if self._motion_frames >= PERSIST_FRAMES:
                cv2.accumulateWeighted(frame, background, alpha)
        else:
            self._motion_frames = 0
            cv2.accumulateWeighted(frame, background, alpha)
        return boxes
