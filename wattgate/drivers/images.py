"""Still images from outside (a client's `infer`): JPEG or PNG, sized before decoding.

A compressed image says how large it is in its header, and a decoder believes it: a few
hundred bytes of JPEG that claim 12000x12000 pixels make OpenCV allocate and fill
430 MB. So the header is read first (PNG's IHDR, JPEG's start-of-frame) and an image
over the pixel limit is refused before any pixel is decoded.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8"
# start-of-frame markers (baseline, progressive, lossless...); C4, C8 and CC are others
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # markers without a length
JPEG_SCAN = 0xDA  # the compressed data starts: the frame header must have come by now
#: Below 0xC0 only TEM (0x01) is a marker. libjpeg (jdmarker.c) reads FF 00 where a marker
#: should be as stuffed data and scans on for the next FF, and stops at the others
#: (JERR_UNKNOWN_MARKER); read as a segment with a length, FF 00 skipped what libjpeg reads.
JPEG_FIRST_MARKER = 0xC0
#: Scans a JPEG may have. Each scan of a progressive JPEG is a pass over every block, and
#: libjpeg takes any number of them (repeated ones with a warning): 45 KiB of repeats of a
#: 33-byte scan made a 2048x2048 image decode for seconds instead of milliseconds. Encoders
#: write 10 (6 for grey: jcparam.c jpeg_simple_progression); libjpeg-turbo's own fuzz
#: targets stop at 500 (TJPARAM_SCANLIMIT), on images of at most one megapixel.
MAX_JPEG_SCANS = 100
JPEG_SOS = b"\xff\xda"  # outside a marker segment, FF is followed by 00 or a marker byte


class ImageError(ValueError):
    """Not an image this module takes; the message says what is wrong with it."""


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from a JPEG's or PNG's header, without decoding it."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("a PNG without its IHDR header")
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(JPEG_START):
        return ("jpeg", *_jpeg_size(data))
    raise ImageError("not a JPEG or PNG image")


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header; a memoryview of a camera's buffer reads
    it without copying the buffer."""
    if bytes(data[:2]) != JPEG_START:
        raise ImageError("not a JPEG image")
    return _jpeg_size(data)


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker < JPEG_FIRST_MARKER:
            raise ImageError(f"a JPEG with byte 0x{marker:02X} where a marker should be at "
                             f"byte {pos + 1}")
        if marker == JPEG_SCAN:
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in JPEG_FRAMES and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return width, height
        if length < 2:
            break
        pos += 2 + length
    raise ImageError("a JPEG without a frame header before its data")


def decode(data: bytes, max_pixels: int) -> np.ndarray[Any, Any]:
    """A JPEG or PNG as a BGR uint8 frame; ImageError if it is not one, is empty, has
    more than max_pixels pixels or, a JPEG, more than MAX_JPEG_SCANS scans."""
    kind, width, height = image_size(data)
    if width == 0 or height == 0:
        raise ImageError(f"a {kind} of {width}x{height} pixels: nothing to look at")
    if width * height > max_pixels:
        raise ImageError(f"a {kind} of {width}x{height} pixels; the limit is {max_pixels} "
                         "pixels")
    if kind == "jpeg" and (scans := data.count(JPEG_SOS)) > MAX_JPEG_SCANS:
        raise ImageError(f"a jpeg of {scans} scans; the limit is {MAX_JPEG_SCANS}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"a {kind} that does not decode")
    return image
