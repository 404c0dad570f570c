"""Frame sources: V4L2 devices, video files, URLs/GStreamer pipelines and generated scenes.

Mechanism only. A source hands out frames with their index and capture time; pacing a
file to its own frame rate is the capture thread's job (it owns the clock), so a source
only says whether it wants pacing (`paced`) and at what rate (`fps`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import cv2
import numpy as np

from wattgate.config import CameraConfig
from wattgate.drivers import synthetic

log = logging.getLogger("wattgate.camera")

SYNTHETIC_PREFIX = "synthetic:"


class SourceError(Exception):
    """A source that cannot be opened; the message names the source."""


Image = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    A source that decodes colour anyway (OpenCV's default) fills `bgr`. A source that can
    give a luma plane cheaply (YUYV/NV12's Y plane, a reduced grayscale MJPEG decode) fills
    `luma` and `decode`, so the gate never pays for colour and only frames that reach the
    model are decoded in colour (`color()`).
    """

    index: int  # the source's frame index: 0 is the first frame of a file
    ts: float  # wall-clock capture time (Unix seconds), what clients see
    mono: float  # monotonic capture time, for latency and the gate's timers
    bgr: Optional[Image]  # uint8, height x width x 3
    luma: Optional[Image] = None  # uint8 Y plane, any resolution
    decode: Optional[Callable[[], Image]] = None  # colour on demand when bgr is None
    size: tuple[int, int] = (0, 0)  # source width, height (needed when only luma is given)

    def color(self) -> Image:
        """The BGR frame, decoding it now if the source deferred that."""
        if self.bgr is not None:
            return self.bgr
        if self.decode is None:
            raise ValueError(f"frame {self.index} has neither colour nor a decoder")
        return self.decode()


class Source(Protocol):
    description: str
    width: int
    height: int
    fps: float
    paced: bool  # a file or scene that should be played at `fps`, not as fast as it decodes

    def read(self) -> Optional[Frame]:
        """The next frame, or None when the source has ended (a file without loop)."""

    def close(self) -> None: ...


def _now() -> tuple[float, float]:
    return time.time(), time.monotonic()


class SyntheticSource:
    """A generated scene; endless, since the scene wraps around."""

    def __init__(self, name: str, cfg: CameraConfig) -> None:
        self.scene = synthetic.make_scene(name, cfg.width, cfg.height, cfg.fps)
        self.description = f"synthetic:{name} {cfg.width}x{cfg.height}@{cfg.fps:g}"
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self.paced = cfg.realtime
        self._index = 0

    def read(self) -> Optional[Frame]:
        ts, mono = _now()
        index = self._index
        self._index += 1
        return Frame(index, ts, mono, self.scene.frame(index))

    def close(self) -> None:
        pass


class CaptureSource:
    """OpenCV VideoCapture over a device, a file, a URL or a GStreamer pipeline."""

    def __init__(self, spec: str, cfg: CameraConfig) -> None:
        self.spec = spec
        self.is_file = os.path.isfile(spec)
        self.loop = cfg.loop and self.is_file
        self._cap = self._open(spec, cfg)
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reported_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported_fps if reported_fps > 0 else cfg.fps
        self.paced = self.is_file and cfg.realtime
        self.description = f"{spec} {self.width}x{self.height}@{self.fps:g}"
        self._index = 0
        if not self.is_file and (self.width, self.height) != (cfg.width, cfg.height):
            log.warning(
                "camera %s gives %dx%d, not the requested %dx%d",
                spec, self.width, self.height, cfg.width, cfg.height,
            )

    @staticmethod
    def _open(spec: str, cfg: CameraConfig) -> cv2.VideoCapture:
        if os.path.isfile(spec):
            cap = cv2.VideoCapture(spec)
        elif spec.isdigit() or spec.startswith("/dev/video"):
            device: int | str = int(spec) if spec.isdigit() else spec
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        elif "!" in spec:
            cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        elif "://" in spec:
            cap = cv2.VideoCapture(spec)
        else:
            raise SourceError(f"camera.source {spec!r}: no such file or device")
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera.source {spec!r}: cannot be opened")
        return cap

    def read(self) -> Optional[Frame]:
        ok, bgr = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._index = 0
            ok, bgr = self._cap.read()
        if not ok:
            return None
        ts, mono = _now()
        index = self._index
        self._index += 1
        return Frame(index, ts, mono, bgr)

    def close(self) -> None:
        self._cap.release()


def open_source(cfg: CameraConfig) -> Source:
    """Open the source `camera.source` names; SourceError says why it cannot be used."""
    spec = cfg.source.strip()
    if spec.startswith(SYNTHETIC_PREFIX):
        name = spec[len(SYNTHETIC_PREFIX):]
        try:
            return SyntheticSource(name, cfg)
        except KeyError as exc:
            raise SourceError(f"camera.source {spec!r}: {exc.args[0]}") from None
    return CaptureSource(spec, cfg)
