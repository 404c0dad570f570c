"""An MJPEG stream that changes frame size mid-way: the reduced grayscale decode the gate
gets follows the new size, so the gate keeps its rows (not 30 of them after a drop from
1080p to 240p, nor 540 after a rise).

The streams are real JPEGs from cv2.imencode, back to back in a file (what `ffmpeg -f mjpeg`
and many IP cameras write), read through FFmpeg as undecoded packets.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from wattgate.config import CameraConfig
from wattgate.drivers.camera import CaptureSource, open_source, reduction_for

Size = tuple[int, int]


def write_stream(path: Path, sizes: list[Size]) -> Path:
    """JPEGs of the given sizes back to back; frame i has grey level 20 i."""
    chunks = []
    for i, (width, height) in enumerate(sizes):
        ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 20 * i, np.uint8))
        assert ok
        chunks.append(buf.tobytes())
    path.write_bytes(b"".join(chunks))
    return path


@pytest.mark.parametrize(
    ("before", "after"), [((1920, 1080), (320, 240)), ((320, 240), (1920, 1080))]
)
@pytest.mark.parametrize("rows", [100, 60])
def test_the_decode_scale_follows_the_frame_size(
    tmp_path: Path, before: Size, after: Size, rows: int
) -> None:
    path = write_stream(tmp_path / "cam.mjpeg", [before] * 2 + [after] * 3)
    source = open_source(
        CameraConfig(source=str(path), format="mjpeg", realtime=False), luma_rows=rows
    )
    try:
        assert isinstance(source, CaptureSource) and source.raw == "MJPG"
        seen = []
        while (frame := source.read()) is not None:
            assert frame.luma is not None
            height = frame.size[1]
            reduce = reduction_for(height, rows)
            # the first frame of the new size too, not only those after it
            assert frame.luma.shape[0] == -(-height // reduce), frame.index
            assert source.reduce == reduce, frame.index
            seen.append(frame.size)
        assert seen == [before] * 2 + [after] * 3
        assert source.end_reason == "ended"
    finally:
        source.close()
