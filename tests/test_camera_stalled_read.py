"""A live camera's failed read is tried again only when it failed fast (a frame that did
not decode), not when it timed out (a stalled camera).

OpenCV's read() waits its whole read timeout on a stalled camera (V4L2's select(),
FFmpeg's interrupt callback) and returns False. Each failed read of a live source was tried
again up to MAX_CORRUPT times, so the worker the supervisor had given up on held the camera
for eleven timeouts, and the reopen meant to recover it could not have it. No camera here
stalls on demand, so a stand-in for cv2.VideoCapture (its read blocking for the read
timeout it was opened with) takes its place; the CaptureSource is the real one.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import pytest

import wattgate.drivers.camera as camera
from wattgate.config import CameraConfig


class StandInCapture:
    """Three frames, then reads that fail: after the read timeout ("stall") or at once,
    every other one ("undecodable": the next read gives a frame)."""

    failing = "stall"
    reads = 0

    def __init__(self, url: str, backend: int, params: list[int]) -> None:
        options = dict(zip(params[::2], params[1::2]))
        self.timeout = options[cv2.CAP_PROP_READ_TIMEOUT_MSEC] / 1000
        self.given = 0

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 64, cv2.CAP_PROP_FRAME_HEIGHT: 48,
                cv2.CAP_PROP_FPS: 30}.get(prop, 0)

    def read(self) -> tuple[bool, Any]:
        StandInCapture.reads += 1
        self.given += 1
        frame = np.zeros((48, 64, 3), np.uint8)
        if self.given <= 3:
            return True, frame
        if self.failing == "stall":
            time.sleep(self.timeout)
            return False, None
        return (False, None) if self.given % 2 == 0 else (True, frame)

    def release(self) -> None:
        pass


@pytest.mark.parametrize("failing", ["stall", "undecodable"])
def test_only_a_read_that_failed_fast_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    url = "http://127.0.0.1:9/stream.mjpg"
    monkeypatch.setattr(cv2, "VideoCapture", StandInCapture)
    monkeypatch.setattr(StandInCapture, "failing", failing)
    source = camera.CaptureSource(url, CameraConfig(source=url), read_timeout_s=0.5)
    for _ in range(3):
        assert source.read() is not None
    StandInCapture.reads = 0
    frame = source.read()
    if failing == "stall":
        assert frame is None and StandInCapture.reads == 1
    else:  # the frame after the one that did not decode
        assert frame is not None and StandInCapture.reads == 2
