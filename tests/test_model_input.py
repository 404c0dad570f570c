"""A camera's frame made into the model's input without decoding all of it in colour.

NV12 and YUYV buffers are converted at the model's size; MJPEG is decoded at the smallest
DCT scale that fills the model's input. The buffers are what a camera would hand over
(OpenCV's own cvtColor and imencode from a photo); the reference is what the daemon did
before: the whole frame in colour, then resized. The model is the bundled BlazeFace on
scikit-image's photos.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import ASTRONAUT_FACE, skimage_image
from wattgate.daemon.pipeline import prepare_frame
from wattgate.drivers.camera import (
    Frame,
    frame_from_mjpeg,
    frame_from_nv12,
    frame_from_yuyv,
    raw_from_bgr,
)
from wattgate.drivers.inference import Model
from wattgate.drivers.yuv import BGR_CODES, Layout, Shrinker, Yuv

Image = np.ndarray[Any, Any]


def camera_buffer(bgr: Image, layout: Layout) -> Yuv:
    raw = raw_from_bgr(bgr, layout)
    return Yuv("NV12", raw.reshape(raw.shape[0], raw.shape[1])) if layout == "NV12" else Yuv(
        "YUYV", raw)


def converted_then_resized(yuv: Yuv, size: tuple[int, int]) -> Image:
    """What the model's input was made from before: the whole frame in colour, shrunk."""
    return cv2.resize(cv2.cvtColor(yuv.raw, BGR_CODES[yuv.layout]), size,
                      interpolation=cv2.INTER_LINEAR)


def mean_abs(a: Image, b: Image) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@pytest.mark.parametrize("layout", ["NV12", "YUYV"])
@pytest.mark.parametrize(("source", "out"), [
    ((640, 480), (128, 96)),     # the bundled model on a VGA camera
    ((1920, 1080), (128, 72)),   # 1080p into 128x128
    ((1280, 720), (299, 169)),   # odd both ways (a 300x300 SSD's letterbox is 300x169)
    ((640, 480), (640, 480)),    # nothing to shrink
])
def test_the_picture_at_the_model_size_is_the_one_shrunk_from_full_colour(
        layout: Layout, source: tuple[int, int], out: tuple[int, int]) -> None:
    yuv = camera_buffer(cv2.resize(skimage_image("astronaut.png"), source), layout)
    assert yuv.size == source
    shrunk = np.zeros((out[1], out[0], 3), np.uint8)
    Shrinker(*out).bgr(yuv, shrunk)
    reference = converted_then_resized(yuv, out)
    if source == out:
        assert np.array_equal(shrunk, reference)
    else:
        # The same luma samples; chroma is sampled from its own half-size planes, so colour
        # edges move by up to a pixel: a small mean difference, nothing systematic.
        assert mean_abs(shrunk, reference) < 6.0
        assert abs(float(shrunk.mean()) - float(reference.mean())) < 1.0


def test_an_odd_size_keeps_its_scale_and_its_last_column() -> None:
    """Converted one pixel larger and cut back: the last column is the picture's, not a
    repeated or shifted one (a vertical ramp stays a ramp to its end)."""
    ramp = np.tile(np.linspace(0, 255, 640).astype(np.uint8)[None, :, None], (480, 1, 3))
    yuv = camera_buffer(np.ascontiguousarray(ramp), "NV12")
    shrunk = np.zeros((47, 63, 3), np.uint8)
    Shrinker(63, 47).bgr(yuv, shrunk)
    row = shrunk[20, :, 1].astype(int)
    assert np.all(np.diff(row) >= 0) and row[-1] > row[-2] > row[-3]
    assert abs(row[-1] - int(converted_then_resized(yuv, (63, 47))[20, -1, 1])) <= 3


@pytest.fixture(scope="module")
def blazeface() -> Model:
    return Model.load(None)


@pytest.mark.parametrize("layout", ["NV12", "YUYV"])
@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_the_model_sees_the_face_in_a_camera_buffer_where_it_sees_it_in_colour(
        blazeface: Model, layout: Layout, size: tuple[int, int]) -> None:
    bgr = cv2.resize(skimage_image("astronaut.png"), size)
    yuv = camera_buffer(bgr, layout)
    from_yuv = blazeface.run(blazeface.preparer().prepare(yuv, keep=False))
    colour: Image = cv2.cvtColor(yuv.raw, BGR_CODES[layout])
    from_colour = blazeface.infer(colour)
    (face,) = from_yuv.detections
    (reference,) = from_colour.detections
    assert np.allclose(face.box, reference.box, atol=0.01 * size[0])
    assert abs(face.score - reference.score) < 0.02
    sx, sy = size[0] / 512, size[1] / 512
    x0, y0, x1, y1 = ASTRONAUT_FACE
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert x0 * sx < cx < x1 * sx and y0 * sy < cy < y1 * sy


def test_a_camera_frame_reaches_the_model_without_a_full_colour_decode() -> None:
    """NV12 and YUYV frames hand the preparer their buffer; colour() still decodes on
    demand for whoever wants the whole frame."""
    bgr = cv2.resize(skimage_image("astronaut.png"), (640, 480))
    for frame in (frame_from_nv12(raw_from_bgr(bgr, "NV12"), 0, 0.0, 0.0),
                  frame_from_yuyv(raw_from_bgr(bgr, "YUYV"), 0, 0.0, 0.0)):
        assert isinstance(frame.picture((128, 128)), Yuv)
        assert frame.color().shape == (480, 640, 3)
        prepared = prepare_frame(Model.load(None).preparer((640, 480)), without_decode(frame))
        assert prepared.tensor.shape == (1, 128, 128, 3)
    assert Frame(0, 0.0, 0.0, bgr).picture((128, 128)) is bgr


def without_decode(frame: Frame) -> Frame:
    """frame, with a full colour decode that fails the test if anything asks for it."""
    def no_decode() -> Image:
        raise AssertionError(f"frame {frame.index} was decoded whole")

    return Frame(frame.index, frame.ts, frame.mono, None, luma=frame.luma, decode=no_decode,
                 size=frame.size, yuv=frame.yuv, jpeg=frame.jpeg)


def mjpeg_frame(bgr: Image) -> Frame:
    frame = frame_from_mjpeg(raw_from_bgr(bgr, "MJPG"), 0, 0.0, 0.0, (0, 0), 4)
    assert frame is not None
    return frame


@pytest.mark.parametrize(("fit", "decoded"), [
    ((128, 72), (240, 135)),     # BlazeFace's 128x128: an eighth
    ((300, 169), (480, 270)),    # a 300x300 SSD: a quarter
    ((640, 360), (960, 540)),    # YOLOv8 at 640: a half
    ((1000, 563), (1920, 1080)),  # more than a half: the whole frame
])
def test_an_mjpeg_frame_is_decoded_at_the_smallest_scale_that_fills_the_model(
        fit: tuple[int, int], decoded: tuple[int, int]) -> None:
    bgr = cv2.resize(skimage_image("astronaut.png"), (1920, 1080))
    frame = mjpeg_frame(bgr)
    picture = frame.picture(fit)
    assert not isinstance(picture, Yuv)
    assert (picture.shape[1], picture.shape[0]) == decoded
    assert frame.full_size == (1920, 1080)
    whole = cv2.resize(frame.color(), decoded, interpolation=cv2.INTER_AREA)
    assert mean_abs(picture, whole) < 4.0


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (1366, 768)])
def test_the_model_sees_the_face_in_a_reduced_mjpeg_decode_where_it_sees_it_whole(
        blazeface: Model, size: tuple[int, int]) -> None:
    """Boxes come back in the frame's pixels, not the reduced decode's (1366 is not a
    multiple of 8: the decode rounds up). libjpeg's scaled decode averages the pixels a
    linear resize of the whole frame skips, so the face scores at least as well."""
    frame = mjpeg_frame(cv2.resize(skimage_image("astronaut.png"), size))
    preparer = blazeface.preparer(size)
    assert preparer.fit(size) == (128, round(128 * size[1] / size[0]))
    (face,) = blazeface.run(prepare_frame(preparer, without_decode(frame))).detections
    (reference,) = blazeface.infer(frame.color()).detections
    assert np.allclose(face.box, reference.box, atol=0.015 * size[0]), (face, reference)
    assert face.score > reference.score - 0.02


def test_a_buffer_whose_size_changes_gets_a_letterbox_of_its_own(blazeface: Model) -> None:
    preparer = blazeface.preparer((640, 480))
    bgr: Image = cv2.resize(skimage_image("astronaut.png"), (1280, 720))
    prepared = preparer.prepare(camera_buffer(bgr, "NV12"), keep=False)
    assert prepared.letterbox.src == (1280, 720)
    (face,) = blazeface.run(prepared).detections
    assert np.allclose(face.box, blazeface.infer(bgr).detections[0].box, atol=13)


def with_exif_orientation(jpeg: Image, orientation: int) -> Image:
    """The JPEG with an EXIF APP1 segment saying how to turn it (6: 90 degrees clockwise),
    as some IP cameras and phone webcams send each frame."""
    tiff = (b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00\x00\x00\x00")
    app1 = b"Exif\x00\x00" + tiff
    data = jpeg.tobytes()
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    return np.frombuffer(data, np.uint8).reshape(1, -1)


def test_an_mjpeg_frame_with_an_exif_orientation_is_taken_as_sent(blazeface: Model) -> None:
    """The frame's size comes from the JPEG's header; every decode of it (the gate's luma,
    the model's reduced colour, the full colour) must have that size too, or the boxes
    are in a turned picture's pixels."""
    bgr = cv2.resize(skimage_image("astronaut.png"), (640, 480))
    plain = raw_from_bgr(bgr, "MJPG")
    frame = frame_from_mjpeg(with_exif_orientation(plain, 6), 0, 0.0, 0.0, (640, 480), 4)
    assert frame is not None and frame.size == (640, 480)
    assert frame.luma is not None and frame.luma.shape == (120, 160)
    assert frame.color().shape == (480, 640, 3)
    preparer = blazeface.preparer((640, 480))
    (face,) = blazeface.run(prepare_frame(preparer, frame)).detections
    (reference,) = blazeface.run(prepare_frame(preparer, mjpeg_frame(bgr))).detections
    assert np.allclose(face.box, reference.box, atol=1.0), (face.box, reference.box)
