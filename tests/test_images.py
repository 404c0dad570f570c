"""Client images: the size is read from the header, and one too large is never decoded."""

from __future__ import annotations

import re
import sys
from typing import Any

import cv2
import numpy as np
import pytest

from tests.test_protocol import claims_size
from wattgate.drivers.images import ImageError, decode_within, image_size


def decode(data: bytes, max_pixels: int) -> np.ndarray[Any, Any]:
    """Decoded at full size: no bound on the memory it takes."""
    return decode_within(data, max_pixels, sys.maxsize).image


def encoded(ext: str, width: int, height: int, *params: int) -> bytes:
    frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    ok, data = cv2.imencode(ext, frame, list(params))
    assert ok
    return bytes(data)


@pytest.mark.parametrize(("ext", "params", "kind"), [
    (".jpg", (), "jpeg"),
    (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpeg"),  # SOF2, not SOF0
    (".jpg", (cv2.IMWRITE_JPEG_RST_INTERVAL, 4), "jpeg"),  # a DRI segment first
    (".png", (), "png"),
])
def test_the_size_comes_from_the_header(ext: str, params: tuple[int, ...], kind: str) -> None:
    data = encoded(ext, 77, 41, *params)
    assert image_size(data) == (kind, 77, 41)
    assert decode(data, 77 * 41).shape == (41, 77, 3)


def test_fill_bytes_before_a_marker_are_skipped() -> None:
    data = encoded(".jpg", 30, 20)
    assert image_size(data[:2] + b"\xff\xff\xff" + data[2:]) == ("jpeg", 30, 20)


@pytest.mark.parametrize(("data", "words"), [
    (b"", "not a JPEG or PNG"),
    (b"GIF89a....", "not a JPEG or PNG"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDX", "IHDR"),
    (b"\xff\xd8\xff\xda\x00\x08", "frame header"),  # scan data before any frame header
    (b"\xff\xd8\xff\xe0\x00\x01", "frame header"),  # a segment length that cannot be
])
def test_what_is_not_a_jpeg_or_png_says_so(data: bytes, words: str) -> None:
    with pytest.raises(ImageError, match=words):
        image_size(data)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    bomb = claims_size(12000, 12000)  # a few hundred bytes: 430 MB decoded
    assert image_size(bomb) == ("jpeg", 12000, 12000)
    with pytest.raises(ImageError, match="12000x12000 pixels; the limit is 16777216"):
        decode(bomb, 4096 * 4096)
    with pytest.raises(ImageError, match="the limit is 99 pixels"):
        decode(encoded(".png", 10, 10), 99)
    with pytest.raises(ImageError, match="0x16 pixels"):
        decode(claims_size(0, 16), 100)


def test_a_frame_header_libjpeg_reads_past_stuffed_bytes_is_not_skipped() -> None:
    """FF 00 where a marker belongs is stuffed data to libjpeg (jdmarker.c next_marker), which
    scans on and reads the real frame header behind it; read as a segment with a length, it
    hid that header, and a second, small one inside an APP1 segment passed the limit while
    the decoder allocated the real size."""
    real = encoded(".jpg", 400, 300)
    scan = real.index(b"\xff\xda")
    segments = real[2:scan]  # the real tables and frame header (400x300)
    small = bytes.fromhex("ffc0 0011 08 0010 0010 03 012200 021101 031101")  # SOF0 16x16
    app1 = b"\xff\xe1" + (2 + len(small)).to_bytes(2, "big")
    skip = len(segments) + len(app1) + 2  # FF 00's "length": up to the small header
    bomb = real[:2] + b"\xff\x00" + skip.to_bytes(2, "big") + segments + app1 + small \
        + real[scan:]
    assert cv2.imdecode(np.frombuffer(bomb, np.uint8), cv2.IMREAD_COLOR).shape == (300, 400, 3)
    with pytest.raises(ImageError, match="0x00 where a marker should be"):
        decode(bomb, 16 * 16 * 4)


def test_a_progressive_jpeg_of_endless_scans_is_refused_before_decoding() -> None:
    """libjpeg passes over every block once a scan and takes any number of scans: a small
    file of one scan repeated kept a decode (and the one `infer` at a time) busy for
    seconds. Encoders write 10 at most (6 for grey)."""
    jpeg = encoded(".jpg", 256, 256, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert image_size(jpeg) == ("jpeg", 256, 256)
    assert decode(jpeg, 256 * 256).shape == (256, 256, 3)  # its own 10 scans are fine
    scans = [m.start() for m in re.finditer(b"\xff\xda", jpeg)]
    last = jpeg[scans[-1]:jpeg.rindex(b"\xff\xd9")]
    endless = jpeg[:-2] + last * 200 + jpeg[-2:]
    assert cv2.imdecode(np.frombuffer(endless, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(ImageError, match="a jpeg of 210 scans; the limit is 100"):
        decode(endless, 256 * 256)
