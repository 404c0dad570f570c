"""One frame FFmpeg cannot decode is dropped, not taken for the end of the source.

With camera.format = "auto" (the default) FFmpeg decodes each frame in colour, and its
read() returns False for a frame whose JPEG is damaged; the next read() gives the frame
after it. Taken for the end, one bad frame ended a whole recording as "cut short" at that
frame (the rest never played), and made a live MJPEG camera lost and reconnected.

The file is a real MJPG AVI with one frame's JPEG headers zeroed; the camera is a real HTTP
multipart MJPEG server on 127.0.0.1 sending one such part. Nothing here asserts how long
anything took: the tests wait, with generous deadlines, for frames to come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_camera_watch import avi_frame_chunks, shows_its_bar, write_video
from wattgate.config import CameraConfig
from wattgate.daemon.camera_watch import SupervisedSource
from wattgate.drivers.camera import CaptureSource

FRAMES = 60
BAD = 30  # the frame whose JPEG is damaged


def damage(data: bytearray, offset: int) -> None:
    """Zero the headers of the JPEG at offset (FFmpeg: "No JPEG data found in image")."""
    data[offset + 2: offset + 600] = bytes(598)


def with_a_corrupt_frame(path: Path) -> Path:
    write_video(path, FRAMES)
    data = bytearray(path.read_bytes())
    offset, _size = avi_frame_chunks(bytes(data))[BAD]
    damage(data, offset + 8)  # the chunk's payload, past its id and size
    path.write_bytes(bytes(data))
    return path


def test_a_file_plays_on_past_a_frame_that_does_not_decode(tmp_path: Path) -> None:
    path = with_a_corrupt_frame(tmp_path / "clip.avi")
    source = CaptureSource(str(path), CameraConfig(source=str(path), realtime=False))
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert [f.index for f in frames] == [i for i in range(FRAMES) if i != BAD]
    assert all(shows_its_bar(f) for f in frames)  # each index names its own picture
    assert source.end_reason == "ended" and source.corrupt == 1


def test_a_supervised_file_with_a_corrupt_frame_ends_whole(tmp_path: Path) -> None:
    path = with_a_corrupt_frame(tmp_path / "clip.avi")
    lost: list[str] = []
    source = SupervisedSource(
        CameraConfig(source=str(path), realtime=False, stall_s=1.0), udev=False,
        on_lost=lost.append)
    indexes = []
    deadline = time.monotonic() + 60
    try:
        while (frame := source.read()) is not None:
            indexes.append(frame.index)
            assert time.monotonic() < deadline, indexes
        assert source.state == "ended", source.status()
        assert source.status()["reopens"] == 0, source.status()
    finally:
        source.stop()
    assert indexes == [i for i in range(FRAMES) if i != BAD]
    assert lost == []


def test_a_file_really_cut_short_still_stops_at_its_cut(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", FRAMES)
    data = path.read_bytes()
    offset, _size = avi_frame_chunks(data)[BAD]
    path.write_bytes(data[:offset])  # frames BAD and on are gone; the header counts them
    source = CaptureSource(str(path), CameraConfig(source=str(path), realtime=False))
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert source.end_reason == "cut short"
    assert source.position == len(frames) == BAD - 1  # the last frame is held back
    assert source.corrupt == 0


def jpeg(shade: int) -> bytes:
    return bytes(cv2.imencode(".jpg", np.full((240, 320, 3), shade, np.uint8))[1])


@pytest.fixture
def mjpeg_camera() -> Iterator[tuple[str, threading.Event]]:
    """A live HTTP MJPEG camera: parts of shade 10 i, part 5 damaged, then it waits
    (connection open, as a camera that goes on) until the event is set."""
    bad = bytearray(jpeg(50))
    damage(bad, 0)
    parts = [jpeg(10 * i) for i in range(5)] + [bytes(bad)]
    parts += [jpeg(10 * i) for i in range(6, 20)]
    done = threading.Event()

    class Camera(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for part in parts:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(part) + part + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                return
            done.wait(60)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/video.mjpg", done
    finally:
        done.set()
        server.shutdown()
        server.server_close()


def test_a_corrupt_part_from_a_live_mjpeg_camera_is_no_loss(
        mjpeg_camera: tuple[str, threading.Event]) -> None:
    url, done = mjpeg_camera
    lost: list[str] = []
    source = SupervisedSource(CameraConfig(source=url, stall_s=10.0), udev=False,
                              on_lost=lost.append)
    shades: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(shades) < 19 and not lost and time.monotonic() < deadline:
            frame = source.read()
            assert frame is not None, source.status()
            shades.append(round(float(frame.color().mean()) / 10))
    finally:
        done.set()
        source.stop()
    assert lost == []
    assert shades == [i for i in range(20) if i != 5]
