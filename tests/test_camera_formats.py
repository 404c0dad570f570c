"""Raw camera formats: MJPEG through the reduced grayscale decode, YUYV and NV12 through the Y
plane, colour only on demand, and the gate judging them as it judges full BGR frames.

The buffers are what a camera would hand over, made with OpenCV's own encoders
(cv2.imencode for MJPEG, cvtColor for YUYV/NV12); the files are real MJPG AVIs read through
FFmpeg as undecoded packets.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pytest
from cv2.typing import MatLike

from tests.conftest import FaceVideo, skimage_image
from wattgate.config import CameraConfig, GateConfig
from wattgate.drivers.camera import (
    CaptureSource,
    Frame,
    SourceError,
    frame_from_mjpeg,
    frame_from_nv12,
    frame_from_yuyv,
    open_source,
    raw_from_bgr,
    raw_picture,
    reduction_for,
)
from wattgate.drivers.synthetic import make_scene, score_gate
from wattgate.drivers.yuv import Layout
from wattgate.policies.gating import GateVerdict, MotionGate

Picture = MatLike
CameraFormat = Literal["auto", "mjpeg", "yuyv"]  # camera.format


def picture() -> Picture:
    return cv2.resize(skimage_image("astronaut.png"), (640, 480))


def mean_abs(a: Picture, b: Picture) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@pytest.mark.parametrize(
    ("height", "rows", "factor"),
    [(480, 100, 4), (720, 100, 4), (1080, 100, 8), (2160, 100, 8), (240, 100, 2), (120, 100, 1),
     (480, 60, 8)],
)
def test_reduction_leaves_the_gate_its_rows(height: int, rows: int, factor: int) -> None:
    assert reduction_for(height, rows) == factor
    assert height // factor >= rows or factor == 1


@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_mjpeg_reduced_decode_is_the_small_grey_picture(reduce: int) -> None:
    bgr = picture()
    buf = raw_from_bgr(bgr, "MJPG")
    assert buf.shape[0] == 1 and buf.dtype == np.uint8  # a V4L2 MJPEG buffer is 1 x bytesused
    frame = frame_from_mjpeg(buf, 7, 1.0, 2.0, (640, 480), reduce)
    assert frame is not None
    assert frame.bgr is None and frame.luma is not None
    assert frame.luma.shape == (480 // reduce, 640 // reduce)
    assert frame.size == (640, 480)
    grey = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (640 // reduce, 480 // reduce),
                      interpolation=cv2.INTER_AREA)
    assert mean_abs(frame.luma, grey) < 4.0


def test_mjpeg_colour_is_decoded_once_and_only_when_asked() -> None:
    bgr = picture()
    buf = raw_from_bgr(bgr, "MJPG")
    frame = frame_from_mjpeg(buf, 0, 0.0, 0.0, (0, 0), 4)
    assert frame is not None
    assert frame.size == (640, 480)  # taken from the reduced decode when not given
    colour = frame.color()
    assert colour.shape == (480, 640, 3)
    assert np.array_equal(colour, cv2.imdecode(buf.reshape(-1), cv2.IMREAD_COLOR))
    assert frame.color() is colour  # cached: a second consumer does not decode again
    assert mean_abs(colour, bgr) < 4.0


def test_a_torn_mjpeg_buffer_is_dropped_not_passed_on() -> None:
    buf = raw_from_bgr(picture(), "MJPG")
    assert frame_from_mjpeg(buf[:, :40], 0, 0.0, 0.0, (640, 480), 4) is None
    assert frame_from_mjpeg(np.zeros((1, 5000), np.uint8), 0, 0.0, 0.0, (640, 480), 4) is None


def test_yuyv_luma_is_the_y_plane_in_place() -> None:
    bgr = picture()
    raw = raw_from_bgr(bgr, "YUYV")
    assert raw.shape == (480, 640, 2)  # what OpenCV's V4L2 backend gives with CONVERT_RGB off
    frame = frame_from_yuyv(raw, 3, 0.0, 0.0)
    assert frame.luma is not None and frame.bgr is None
    assert np.shares_memory(frame.luma, raw)  # no copy, no conversion
    assert np.array_equal(frame.luma, raw[:, :, 0])
    assert frame.size == (640, 480)
    assert mean_abs(frame.luma, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)) < 12.0
    assert mean_abs(frame.color(), bgr) < 8.0  # 4:2:2 chroma


def test_nv12_luma_is_the_top_of_the_buffer() -> None:
    bgr = picture()
    raw = raw_from_bgr(bgr, "NV12")
    assert raw.shape == (720, 640)
    frame = frame_from_nv12(raw, 0, 0.0, 0.0)
    assert frame.luma is not None and frame.luma.shape == (480, 640)
    assert np.shares_memory(frame.luma, raw)
    assert frame.size == (640, 480)
    assert mean_abs(frame.color(), bgr) < 8.0  # 4:2:0 chroma
    three_d = frame_from_nv12(raw.reshape(720, 640, 1), 0, 0.0, 0.0)  # as some backends give it
    assert three_d.luma is not None and np.array_equal(three_d.luma, frame.luma)


# -- the gate on each path --------------------------------------------------------------------


def gate_frame(gate: MotionGate, frame: Frame) -> GateVerdict:
    """What the pipeline's capture loop does with a frame."""
    if frame.luma is not None:
        return gate.update_luma(frame.luma, frame.mono, source_size=frame.size)
    return gate.update_bgr(frame.color(), frame.mono)


def as_format(bgr: Picture, fmt: str, index: int, now: float) -> Frame:
    if fmt == "bgr":
        return Frame(index, now, now, bgr)
    if fmt == "mjpeg":
        frame = frame_from_mjpeg(raw_from_bgr(bgr, "MJPG"), index, now, now, (0, 0),
                                 reduction_for(bgr.shape[0]))
        assert frame is not None
        return frame
    if fmt == "yuyv":
        return frame_from_yuyv(raw_from_bgr(bgr, "YUYV"), index, now, now)
    return frame_from_nv12(raw_from_bgr(bgr, "NV12"), index, now, now)


@pytest.mark.parametrize("scene_name", ["person", "small-object", "lights"])
@pytest.mark.parametrize("fmt", ["mjpeg", "yuyv", "nv12"])
def test_gate_verdicts_on_raw_paths_match_the_bgr_path(scene_name: str, fmt: str) -> None:
    scene = make_scene(scene_name)
    cfg = GateConfig()
    by_bgr, by_raw = MotionGate(cfg), MotionGate(cfg)
    ref: list[GateVerdict] = []
    got: list[GateVerdict] = []
    for i in range(scene.length):
        bgr = scene.frame(i)
        now = i / scene.fps
        ref.append(gate_frame(by_bgr, as_format(bgr, "bgr", i, now)))
        got.append(gate_frame(by_raw, as_format(bgr, fmt, i, now)))
    agree = sum(a.motion == b.motion for a, b in zip(ref, got)) / len(ref)
    assert agree >= 0.9, agree
    want, have = score_gate(scene, ref, cfg.cooldown_s), score_gate(scene, got, cfg.cooldown_s)
    assert have.recall == want.recall
    assert abs(have.skip_ratio - want.skip_ratio) <= 0.05
    both = [(a, b) for a, b in zip(ref, got) if a.boxes and b.boxes]
    for _, b in both:
        for box in b.boxes:  # boxes come back in source pixels on every path
            assert 0 <= box[0] < box[2] <= 640 and 0 <= box[1] < box[3] <= 480
    overlapping = sum(iou(union(a.boxes), union(b.boxes)) >= 0.3 for a, b in both)
    assert overlapping >= 0.9 * len(both), (overlapping, len(both))


def union(boxes: tuple[tuple[int, int, int, int], ...]) -> tuple[int, int, int, int]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


# -- real files through FFmpeg as packets -----------------------------------------------------


def config(path: Path, **values: Any) -> CameraConfig:
    return CameraConfig(source=str(path), realtime=False, **values)


def test_an_mjpeg_file_read_as_packets_gates_on_luma_and_decodes_colour_on_demand(
    face_video: FaceVideo,
) -> None:
    plain = open_source(config(face_video.path))
    packets = open_source(config(face_video.path, format="mjpeg"))
    try:
        assert isinstance(packets, CaptureSource) and packets.raw == "MJPG"
        assert "MJPG" in packets.description
        by_bgr, by_luma = MotionGate(GateConfig()), MotionGate(GateConfig())
        agree = 0
        for i in range(face_video.frames):
            a, b = plain.read(), packets.read()
            assert a is not None and b is not None
            assert b.index == a.index == i
            assert b.bgr is None and b.luma is not None and b.size == (640, 480)
            assert b.luma.shape == (120, 160)
            now = i / face_video.fps
            va = by_bgr.update_bgr(a.color(), now)
            vb = by_luma.update_luma(b.luma, now, source_size=b.size)
            agree += va.motion == vb.motion
            if i % 15 == 0:  # libjpeg's and FFmpeg's decoders agree to rounding
                assert mean_abs(b.color(), a.color()) < 2.0
        assert agree >= face_video.frames - 2
        assert plain.read() is None and packets.read() is None
        assert getattr(packets, "end_reason", None) == "ended"
    finally:
        plain.close()
        packets.close()


def test_yuyv_asked_of_a_file_falls_back_to_colour(face_video: FaceVideo) -> None:
    source = open_source(config(face_video.path, format="yuyv"))
    try:
        assert isinstance(source, CaptureSource) and source.raw is None
        frame = source.read()
        assert frame is not None and frame.bgr is not None and frame.luma is None
    finally:
        source.close()


def test_a_file_opened_at_a_frame_starts_there(tmp_path: Path) -> None:
    path = tmp_path / "count.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(30):
        image = np.full((240, 320, 3), 80, np.uint8)
        cv2.rectangle(image, (i * 10, 100), (i * 10 + 9, 140), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    for fmt in ("auto", "mjpeg"):
        source = CaptureSource(str(path), config(path, format=fmt), start_frame=12)
        frame = source.read()
        assert frame is not None and frame.index == 12
        bright = np.nonzero(cv2.cvtColor(frame.color(), cv2.COLOR_BGR2GRAY).max(axis=0) > 200)[0]
        assert 118 <= bright.mean() <= 128  # the bar drawn in frame 12
        source.close()


# -- sources that are not what they seem --------------------------------------------------------


def jpeg(value: int, size: tuple[int, int]) -> bytes:
    """A JPEG of one grey level, as a camera or an MJPEG recorder would send it."""
    ok, buf = cv2.imencode(".jpg", np.full((size[1], size[0], 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def write_mjpeg_stream(path: Path, sizes: list[tuple[int, int]]) -> Path:
    """A raw MJPEG stream (what `ffmpeg -f mjpeg` and many IP cameras write): JPEGs back to
    back, no container, no index, so it cannot seek; frame i has grey level 20 i."""
    path.write_bytes(b"".join(jpeg(20 * i, size) for i, size in enumerate(sizes)))
    return path


def test_an_empty_mjpeg_buffer_is_dropped_not_raised() -> None:
    # a UVC camera hands over a 0-byte buffer after a USB error; imdecode asserts on it
    for empty in (np.zeros((1, 0), np.uint8), np.zeros((0,), np.uint8)):
        assert frame_from_mjpeg(empty, 0, 0.0, 0.0, (640, 480), 4) is None


def test_mjpeg_frames_carry_their_own_size_when_the_stream_changes_it(tmp_path: Path) -> None:
    path = write_mjpeg_stream(tmp_path / "cam.mjpeg", [(320, 240)] * 4 + [(640, 480)] * 4)
    source = open_source(config(path, format="mjpeg"))
    try:
        assert isinstance(source, CaptureSource) and source.raw == "MJPG"
        sizes = []
        while (frame := source.read()) is not None:
            colour = frame.color()
            assert frame.size == (colour.shape[1], colour.shape[0]), frame.index
            assert frame.luma is not None
            assert frame.luma.shape[0] * source.reduce >= colour.shape[0] > 0
            sizes.append(frame.size)
        assert sizes == [(320, 240)] * 4 + [(640, 480)] * 4
    finally:
        source.close()
    # the size from the reduced decode was rounded up to a multiple of the reduction
    buf = raw_from_bgr(np.full((1, 641, 3), 90, np.uint8), "MJPG")
    frame = frame_from_mjpeg(buf, 0, 0.0, 0.0, (0, 0), 8)
    assert frame is not None and frame.size == (641, 1)


@pytest.mark.parametrize(("shape", "dtype"), [
    ((48, 64), np.uint8),  # GRAY8: a mono sensor
    ((48, 64, 1), np.uint8),
    ((48, 64), np.uint16),  # GRAY16_LE
    ((48, 64, 4), np.uint8),  # BGRx / BGRA
    ((48, 64, 3), np.uint16),
])
def test_grey_four_channel_and_16_bit_frames_become_bgr_or_luma(
    shape: tuple[int, ...], dtype: type
) -> None:
    """What OpenCV's GStreamer appsink hands over for the formats a pipeline can end in."""
    from wattgate.drivers import camera

    scale = 257 if dtype == np.uint16 else 1
    plane = np.arange(48 * 64).reshape(48, 64) % 200
    data = np.broadcast_to((plane * scale)[:, :, None], (48, 64, 4))
    data = np.ascontiguousarray(data[:, :, : shape[2]] if len(shape) == 3 else data[:, :, 0])
    data = data.astype(dtype)
    frame = camera.frame_from_capture(data, 5, 1.0, 2.0)
    assert frame is not None and frame.index == 5
    colour = frame.color()
    assert colour.dtype == np.uint8 and colour.shape == (48, 64, 3)
    assert frame.size in ((0, 0), (64, 48))
    if frame.luma is not None:
        assert frame.luma.dtype == np.uint8 and frame.luma.shape[:2] == (48, 64)
        verdict = MotionGate(GateConfig()).update_luma(frame.luma, 0.0, source_size=(64, 48))
    else:
        verdict = MotionGate(GateConfig()).update_bgr(colour, 0.0)
    assert verdict.reason == "calibrating"
    assert mean_abs(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), plane.astype(np.uint8)) < 1.0


def test_a_bgr_capture_frame_is_passed_on_as_is() -> None:
    from wattgate.drivers import camera

    bgr = np.full((48, 64, 3), 7, np.uint8)
    frame = camera.frame_from_capture(bgr, 0, 0.0, 0.0)
    assert frame is not None and frame.bgr is bgr
    assert camera.frame_from_capture(np.zeros((48, 64, 3), np.float32), 0, 0.0, 0.0) is None


def test_loop_starts_again_a_file_that_cannot_seek(tmp_path: Path) -> None:
    path = write_mjpeg_stream(tmp_path / "clip.mjpeg", [(320, 240)] * 5)
    for fmt in ("auto", "mjpeg"):
        source = open_source(config(path, loop=True, format=fmt))
        try:
            levels: list[int] = []
            for _ in range(12):
                frame = source.read()
                assert frame is not None, (fmt, len(levels), getattr(source, "end_reason", None))
                levels.append(round(float(frame.color().mean()) / 20))
            assert levels == [0, 1, 2, 3, 4] * 2 + [0, 1]
        finally:
            source.close()


def test_a_file_replaced_while_open_is_reported_at_its_end(tmp_path: Path) -> None:
    """Log rotation: a new recording is renamed over the one being played. Playing on, or
    looping, the old one (deleted, still open) would show stale pictures for ever."""
    path = write_mjpeg_stream(tmp_path / "clip.mjpeg", [(320, 240)] * 4)
    for loop in (False, True):
        write_mjpeg_stream(path, [(320, 240)] * 4)
        source = open_source(config(path, loop=loop))
        try:
            first = source.read()
            assert first is not None
            fresh = write_mjpeg_stream(tmp_path / "new.part", [(160, 120)] * 6)
            os.replace(fresh, path)
            count = 1
            while source.read() is not None:
                count += 1
                assert count <= 4, "the replaced file was looped"
            assert count == 4  # the old file to its end, then the news
            assert getattr(source, "end_reason", None) == "replaced"
        finally:
            source.close()
    again = open_source(config(path))
    assert again.width == 160  # what a reopen then plays
    again.close()


def test_a_fifo_without_a_writer_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    """open(2) of a FIFO blocks until a writer comes; a capture opened on one with no writer
    held its thread for ever, past every timeout (the supervisor gave up on it and left it)."""
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    cfg = CameraConfig(source=str(fifo), realtime=False)
    outcome: list[BaseException | CaptureSource] = []

    def attempt() -> None:
        try:
            outcome.append(CaptureSource(str(fifo), cfg, read_timeout_s=0.5))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # let the blocked open go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("opening a FIFO with no writer blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], SourceError), outcome
    assert str(fifo) in str(outcome[0]) and "writer" in str(outcome[0])


def test_a_fifo_with_a_writer_gives_its_frames(tmp_path: Path) -> None:
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    frames = [jpeg(10 * i, (320, 240)) for i in range(20)]
    done = threading.Event()

    def write() -> None:
        with open(fifo, "wb") as out:  # blocks until the capture opens its end
            for data in frames:
                try:
                    out.write(data)
                    out.flush()
                except BrokenPipeError:
                    break
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    source = CaptureSource(str(fifo), CameraConfig(source=str(fifo)), read_timeout_s=5.0)
    try:
        assert source.kind == "stream" and not source.loop
        got = []
        while (frame := source.read()) is not None:
            got.append(frame)
        assert len(got) >= 15 and got[0].color().shape == (240, 320, 3)
        assert source.end_reason == "read failed"  # a stream's end is a failure to reopen
    finally:
        source.close()
        assert done.wait(30)


# -- V4L2 buffers as OpenCV hands them over ------------------------------------------------------


def one_row(buffer: Picture, stride: int = 0, tail: int = 0) -> Picture:
    """A raw buffer as OpenCV's V4L2 backend returns it with CONVERT_RGB off: one row of
    bytesused bytes (cap_v4l.cpp, retrieveFrame). `stride`: each row padded to that many
    bytes (an ISP's bytesperline); `tail`: bytes after the picture."""
    rows = buffer.reshape(buffer.shape[0], -1)
    if stride:
        padded = np.full((rows.shape[0], stride), 0xEE, np.uint8)
        padded[:, : rows.shape[1]] = rows
        rows = padded
    flat = np.concatenate([rows.reshape(-1), np.full(tail, 0xEE, np.uint8)])
    one: Picture = flat.reshape(1, -1)
    return one


@pytest.mark.parametrize("layout", ["NV12", "YUYV"])
@pytest.mark.parametrize(("stride", "tail"), [(0, 0), (1408, 0), (0, 4096)])
def test_a_v4l2_buffer_of_one_row_is_the_picture(layout: Layout, stride: int, tail: int) -> None:
    """Tight rows, rows padded to a 64-byte aligned stride past the width, and a buffer
    with bytes after the picture all give the camera's picture, not a 0-row one."""
    bgr = picture()
    whole = raw_from_bgr(bgr, layout)
    buffer = one_row(whole, stride, tail)
    shaped = raw_picture(buffer, layout, (640, 480))
    assert np.array_equal(shaped, whole)
    make = frame_from_nv12 if layout == "NV12" else frame_from_yuyv
    frame = make(shaped, 0, 0.0, 0.0)
    assert frame.size == (640, 480) and frame.luma is not None
    assert frame.luma.shape == (480, 640)
    assert mean_abs(frame.color(), bgr) < 8.0
    verdict = MotionGate(GateConfig()).update_luma(frame.luma, 0.0, source_size=frame.size)
    assert verdict.reason == "calibrating"


@pytest.mark.parametrize("layout", ["NV12", "YUYV"])
def test_a_short_v4l2_buffer_is_refused_saying_why(layout: Layout) -> None:
    buffer = one_row(raw_from_bgr(picture(), layout))[:, :5000]
    with pytest.raises(ValueError, match=f"{layout} buffer of 5000 bytes, short of the"):
        raw_picture(buffer, layout, (640, 480))


class V4l2Capture:
    """Stands in for cv2.VideoCapture on a V4L2 camera, which this machine does not have:
    it negotiates 640x480 in `fourcc` and hands over `buffers` as OpenCV's V4L2 backend
    does with CONVERT_RGB off, one row of bytesused bytes each."""

    def __init__(self, fourcc: str, buffers: list[Picture]) -> None:
        self.fourcc = cv2.VideoWriter.fourcc(*fourcc)
        self.buffers = list(buffers)

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_FRAME_WIDTH: 640, cv2.CAP_PROP_FRAME_HEIGHT: 480,
                  cv2.CAP_PROP_FPS: 30, cv2.CAP_PROP_FOURCC: self.fourcc}
        return float(values.get(prop, 0))

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, Any]:
        return (True, self.buffers.pop(0)) if self.buffers else (False, None)

    def release(self) -> None:
        pass


@pytest.mark.parametrize(("layout", "fmt"), [("NV12", "yuyv"), ("YUYV", "yuyv"),
                                           ("MJPG", "mjpeg")])
def test_a_torn_camera_buffer_is_dropped_logged_and_capture_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, layout: str,
    fmt: CameraFormat,
) -> None:
    """A raw camera asked for YUYV may give NV12 (a CSI/ISP pipeline); a short buffer of
    any format is one lost frame, not the camera's end."""
    whole = one_row(raw_from_bgr(picture(), layout))
    torn = whole[:, : whole.size // 3]
    buffers = [whole, torn, torn, whole]
    monkeypatch.setattr(cv2, "VideoCapture", lambda *args: V4l2Capture(layout, buffers))
    cfg = CameraConfig(source="/dev/null", format=fmt)
    source = CaptureSource("/dev/null", cfg, kind="v4l2")
    assert source.raw == layout
    frames = [source.read(), source.read()]
    assert [f.index if f else None for f in frames] == [0, 3]
    for frame in frames:
        assert frame is not None and frame.size == (640, 480)
        assert mean_abs(frame.color(), picture()) < 8.0
    assert source.corrupt == 2 and source.end_reason is None
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "frame 1 dropped" in dropped[0], dropped


@pytest.mark.parametrize(("pipeline", "fmt"), [
    ("nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,format=NV12 ! "
     "nvvidconv ! video/x-raw,format=I420 ! appsink", "I420"),  # Jetson's usual pipeline
    ("v4l2src device=/dev/video0 ! video/x-raw, format=(string)NV12, width=(int)640 ! "
     "appsink drop=true max-buffers=1", "NV12"),  # i.MX8MP / RK3588 ISP
    ('videotestsrc ! video/x-raw,format="yuy2" ! appsink name=opencvsink', "YUY2"),
    ("v4l2src ! videoconvert ! appsink", None),
])
def test_the_format_a_pipeline_fixes_for_its_appsink(pipeline: str, fmt: str | None) -> None:
    from wattgate.drivers.camera import appsink_format

    assert appsink_format(pipeline) == fmt


def appsink_buffer(bgr: Picture, fmt: str) -> Picture:
    """What OpenCV's GStreamer backend hands over for caps `fmt`: 4:2:0 as one channel of
    height*3/2 rows, packed 4:2:2 as two channels. The pip wheel of OpenCV has no GStreamer
    backend, so the buffers are made with OpenCV's own converters."""
    height, width = bgr.shape[:2]
    if fmt == "NV12":
        return raw_from_bgr(bgr, "NV12")
    if fmt == "NV21":
        nv12 = raw_from_bgr(bgr, "NV12")
        vu = nv12[height:].reshape(height // 2, width // 2, 2)[:, :, ::-1]
        nv21: Picture = np.concatenate([nv12[:height], vu.reshape(height // 2, width)])
        return nv21
    if fmt in ("I420", "YV12"):
        code = cv2.COLOR_BGR2YUV_I420 if fmt == "I420" else cv2.COLOR_BGR2YUV_YV12
        return cv2.cvtColor(bgr, code)
    yuyv = raw_from_bgr(bgr, "YUYV").reshape(height, width, 2)
    if fmt == "YUY2":
        return yuyv
    pairs = yuyv.reshape(height, width // 2, 4)  # Y0 U Y1 V
    order = [1, 0, 3, 2] if fmt == "UYVY" else [0, 3, 2, 1]  # U Y0 V Y1 / Y0 V Y1 U
    return np.ascontiguousarray(pairs[:, :, order]).reshape(height, width, 2)


def video_luma(bgr: Picture) -> Picture:
    """The Y plane (BT.601, video range) OpenCV's converters give for a picture."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)[: bgr.shape[0]]


@pytest.mark.parametrize("fmt", ["NV12", "NV21", "I420", "YV12", "YUY2", "UYVY", "YVYU"])
def test_a_yuv_appsink_buffer_becomes_a_frame_of_its_picture(fmt: str) -> None:
    """Taken as grey, a 4:2:0 buffer was a frame half as tall again, its chroma part of the
    picture the gate and the model saw; a packed 4:2:2 one was dropped."""
    from wattgate.drivers.camera import frame_from_appsink

    bgr = cv2.resize(skimage_image("astronaut.png"), (64, 48))
    frame = frame_from_appsink(appsink_buffer(bgr, fmt), fmt, 48, 3, 1.0, 2.0)
    assert frame is not None and frame.index == 3
    assert frame.size == (64, 48) and frame.luma is not None
    assert frame.luma.shape == (48, 64)
    assert mean_abs(frame.luma, video_luma(bgr)) < 1.0
    colour = frame.color()
    assert colour.shape == (48, 64, 3)
    assert mean_abs(colour, bgr) < 12.0  # what 4:2:x chroma subsampling keeps of colour


def test_an_unnamed_420_buffer_keeps_its_luma_and_loses_only_colour() -> None:
    """A pipeline whose caps leave the format to negotiation: the capture's height says the
    buffer is 4:2:0, whose Y plane is on top in every layout."""
    from wattgate.drivers.camera import frame_from_appsink

    bgr = cv2.resize(skimage_image("astronaut.png"), (64, 48))
    frame = frame_from_appsink(appsink_buffer(bgr, "I420"), None, 48, 0, 0.0, 0.0)
    assert frame is not None and frame.size == (64, 48) and frame.luma is not None
    assert mean_abs(frame.luma, video_luma(bgr)) < 1.0
    colour = frame.color()
    assert colour.shape == (48, 64, 3) and (colour[:, :, 0] == colour[:, :, 2]).all()
    grey = np.full((48, 64), 9, np.uint8)  # a GRAY8 frame is still grey
    frame = frame_from_appsink(grey, None, 48, 0, 0.0, 0.0)
    assert frame is not None and frame.size == (64, 48) and frame.luma is not None
    assert np.array_equal(frame.luma, grey)
