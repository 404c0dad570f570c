"""Still images from outside (a client's `infer`): JPEG or PNG, sized before decoding.

A compressed image says how large it is in its header, and a decoder believes it: a few
hundred bytes of JPEG that claim 12000x12000 pixels make OpenCV allocate and fill
430 MB. So the header is read first (PNG's IHDR, JPEG's start-of-frame) and an image
over the pixel limit is refused before any pixel is decoded.

Decoding takes more than its result: OpenCV's imdecode fills the BGR result from a buffer
about as large, and libjpeg holds a JPEG of several scans whole as coefficients. A model
needs a few hundred pixels a side, so ``decode_within`` decodes a large JPEG at 1/2, 1/4
or 1/8 of its size (libjpeg's DCT scaling, with no full-size buffer) to keep within a
stated number of bytes, and refuses a PNG (which has no such decoding) that would not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
#: Frames libjpeg decodes in progressive mode: it keeps every coefficient until the last scan.
JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
#: Lossless frames have no DCT to decode at a smaller scale.
JPEG_LOSSLESS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
#: The peak of cv2.imdecode, in bytes a pixel of its result: the 3 of the BGR result and a
#: buffer about as large it is converted from (a PNG's rows at any depth, libjpeg's output),
#: measured 6.1 to 6.2 for JPEGs and 1-, 8- and 16-bit PNGs of 4 to 16 megapixels; 7 with room
#: for the decoders' own buffers.
DECODE_BYTES_PER_PIXEL = 7
#: A JPEG of several scans (progressive, or its components in scans of their own) is held whole
#: as DCT coefficients, whatever the scale it is decoded at (libjpeg jdcoefct.c): 64 of 2
#: bytes for each 8x8 block of each component.
COEFFICIENT_BYTES_PER_BLOCK = 128
#: The scales libjpeg decodes at, with the flag that asks OpenCV for each.
JPEG_SCALES: tuple[tuple[int, int], ...] = (
    (1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2),
    (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))
MIB = 1024 * 1024


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


@dataclass(frozen=True)
class JpegFrame:
    """A JPEG's start-of-frame: its marker, where it is, the size, and each component's
    sampling factors (horizontal, vertical); empty when the header is cut short."""

    marker: int
    pos: int
    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]

    def coefficient_bytes(self) -> int:
        """What libjpeg holds when it keeps the whole image as coefficients: each component's
        blocks at its own sampling, rounded up to whole MCUs as libjpeg allocates them. Four
        full-size components when the header does not say (CMYK, the most there can be)."""
        sampling = self.sampling or ((1, 1),) * 4
        h_max = max(h for h, _ in sampling)
        v_max = max(v for _, v in sampling)
        blocks = 0
        for h, v in sampling:
            across = math.ceil(math.ceil(self.width * h / h_max) / 8)
            down = math.ceil(math.ceil(self.height * v / v_max) / 8)
            blocks += (across + h) * (down + v)
        return blocks * COEFFICIENT_BYTES_PER_BLOCK


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    frame = _jpeg_frame(data)
    return frame.width, frame.height


def _jpeg_frame(data: bytes | memoryview) -> JpegFrame:
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
            return JpegFrame(marker, pos, width, height, _jpeg_sampling(data, pos))
        if length < 2:
            break
        pos += 2 + length
    raise ImageError("a JPEG without a frame header before its data")


def _jpeg_sampling(data: bytes | memoryview, pos: int) -> tuple[tuple[int, int], ...]:
    """The components' sampling factors of the frame header at pos; () if it is cut short.
    A factor outside 1..4, which libjpeg refuses, counts as 4: the most it could hold."""
    if pos + 10 > len(data):
        return ()
    count = data[pos + 9]
    if count == 0 or pos + 10 + 3 * count > len(data):
        return ()
    factors = (data[pos + 11 + 3 * i] for i in range(count))
    return tuple((h if 1 <= h <= 4 else 4, v if 1 <= v <= 4 else 4)
                 for h, v in ((f >> 4, f & 0x0F) for f in factors))


@dataclass(frozen=True)
class Decoded:
    """A client's image as decoded, perhaps at 1/2, 1/4 or 1/8 of its size, and the size it
    has (width x height, the way up ``image`` is): ``source_box`` gives a box found in
    ``image`` in the image's own pixels, the ones its sender knows."""

    image: np.ndarray[Any, Any]
    width: int
    height: int

    def source_box(self, box: tuple[float, float, float, float]
                   ) -> tuple[float, float, float, float]:
        across = self.width / self.image.shape[1]
        down = self.height / self.image.shape[0]
        x0, y0, x1, y1 = box
        return x0 * across, y0 * down, x1 * across, y1 * down


def _checked_size(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """image_size, refusing an empty image, one over max_pixels and a JPEG of more than
    MAX_JPEG_SCANS scans."""
    kind, width, height = image_size(data)
    if width == 0 or height == 0:
        raise ImageError(f"a {kind} of {width}x{height} pixels: nothing to look at")
    if width * height > max_pixels:
        raise ImageError(f"a {kind} of {width}x{height} pixels; the limit is {max_pixels} "
                         "pixels")
    if kind == "jpeg" and (scans := data.count(JPEG_SOS)) > MAX_JPEG_SCANS:
        raise ImageError(f"a jpeg of {scans} scans; the limit is {MAX_JPEG_SCANS}")
    return kind, width, height


def _imdecode(data: bytes, kind: str, flag: int) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ImageError(f"a {kind} that does not decode")
    return image


def decode_within(data: bytes, max_pixels: int, max_bytes: int) -> Decoded:
    """A JPEG or PNG as a BGR uint8 frame, in about max_bytes of memory at the peak: a JPEG
    at the largest of its full size, 1/2, 1/4 and 1/8 that fits, with what libjpeg holds
    of a JPEG of several scans. ImageError if it is not one, is empty, has more than
    max_pixels pixels or, a JPEG, more than MAX_JPEG_SCANS scans; and, before decoding,
    when nothing fits (a PNG over max_bytes / DECODE_BYTES_PER_PIXEL pixels, a JPEG whose
    coefficients alone do not)."""
    kind, width, height = _checked_size(data, max_pixels)
    scales = JPEG_SCALES[:1]
    held = 0
    if kind == "jpeg":
        frame = _jpeg_frame(data)
        if frame.marker not in JPEG_LOSSLESS:
            scales = JPEG_SCALES
        if frame.marker in JPEG_PROGRESSIVE or data.count(JPEG_SOS, frame.pos) > 1:
            held = frame.coefficient_bytes()

    def need(factor: int) -> int:
        return held + math.ceil(width / factor) * math.ceil(height / factor) \
            * DECODE_BYTES_PER_PIXEL

    fitting = [(factor, flag) for factor, flag in scales if need(factor) <= max_bytes]
    if not fitting:
        raise ImageError(f"a {kind} of {width}x{height} pixels, which takes "
                         f"{math.ceil(need(scales[-1][0]) / MIB)} MiB to decode; the limit is "
                         f"{max_bytes // MIB} MiB")
    factor, flag = fitting[0]
    across, down = math.ceil(width / factor), math.ceil(height / factor)
    image = _imdecode(data, kind, flag)
    rows, columns = image.shape[:2]
    if factor == 1:
        return Decoded(image, columns, rows)
    # OpenCV turns a JPEG the way its EXIF orientation says: then the sides are swapped.
    turned = (rows, columns) == (across, down) != (down, across)
    return Decoded(image, *((height, width) if turned else (width, height)))
