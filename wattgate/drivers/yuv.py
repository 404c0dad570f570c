"""A camera's YUV picture, turned into colour at the size the model takes.

A V4L2 camera hands over NV12 or YUYV. Converting the whole buffer to BGR and then
shrinking it to the model's input (128x128 for BlazeFace) spends nearly all its work on
pixels the resize throws away: at 1080p the conversion touches 2 million pixels for a
model that sees 16 thousand (about 1 ms against 0.02 ms on an x86 core, more on a
board's). Resizing the planes first and converting at the model's size gives the same
picture, through the same BT.601 conversion OpenCV applies to the whole buffer, on every
frame that reaches the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import cv2
import numpy as np

Image = np.ndarray[Any, Any]
Layout = Literal["NV12", "YUYV"]
#: OpenCV's conversion of a whole buffer of each layout to BGR
BGR_CODES: dict[Layout, int] = {"NV12": cv2.COLOR_YUV2BGR_NV12, "YUYV": cv2.COLOR_YUV2BGR_YUYV}


@dataclass(frozen=True)
class Yuv:
    """A camera's buffer as it came: NV12 (height*3/2 rows of width bytes: Y, then U and V
    interleaved at half the width and height) or YUYV (height x width x 2: Y0 U Y1 V for
    each pair of pixels)."""

    layout: Layout
    raw: Image

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        rows = self.raw.shape[0] * 2 // 3 if self.layout == "NV12" else self.raw.shape[0]
        return self.raw.shape[1], rows

    def bgr(self, out: Optional[Image] = None) -> Image:
        """The whole picture in colour: OpenCV's conversion of the whole buffer (into out,
        height x width x 3, if given)."""
        width, height = self.size
        shape = (height * 3 // 2, width) if self.layout == "NV12" else (height, width, 2)
        raw = np.ascontiguousarray(self.raw).reshape(shape)
        return cv2.cvtColor(raw, BGR_CODES[self.layout], dst=out)


class Shrinker:
    """YUV to BGR at one output size, with buffers of its own (one per thread).

    The luma and the chroma are resized apart into a small NV12 picture, which OpenCV
    then converts. NV12 needs an even width and height: for an odd output size the luma
    is resized to that size and the picture converted one pixel larger and cut back (a
    pixel's colour takes only its own luma), so it keeps the exact scale the caller asked
    for (the letterbox maps boxes back with it)."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)
        even_w, even_h = width + width % 2, height + height % 2
        self._nv12 = np.empty((even_h * 3 // 2, even_w), np.uint8)
        self._luma = self._nv12[:even_h]
        self._chroma = self._nv12[even_h:].reshape(even_h // 2, even_w // 2, 2)
        self._odd = (width, height) != (even_w, even_h)
        self._scaled = np.empty((height, width), np.uint8) if self._odd else self._luma
        self._pairs = np.empty((height, width, 2), np.uint8)  # YUYV resized as Y and U/V
        self._quads = np.empty((even_h // 2, even_w // 2, 4), np.uint8)  # YUYV's Y0 U Y1 V
        self._bgr = np.empty((even_h, even_w, 3), np.uint8)

    def bgr(self, yuv: Yuv, out: Image) -> None:
        """The picture in colour at this size, written into out (height x width x 3)."""
        width, height = self.size
        src_w, src_h = yuv.size
        chroma_size = (self._chroma.shape[1], self._chroma.shape[0])
        if (src_w, src_h) == self.size:  # nothing to shrink: the one conversion, exact
            yuv.bgr(out)
            return
        raw = np.ascontiguousarray(yuv.raw)
        if yuv.layout == "NV12":
            plane = raw.reshape(-1, src_w)
            cv2.resize(plane[:src_h], self.size, dst=self._scaled, interpolation=cv2.INTER_LINEAR)
            chroma = plane[src_h:].reshape(src_h // 2, src_w // 2, 2)
            cv2.resize(chroma, chroma_size, dst=self._chroma, interpolation=cv2.INTER_LINEAR)
        else:
            # Resized whole, a YUYV buffer's first channel is the luma at the right scale;
            # resized as pixel pairs, its second and fourth are U and V.
            cv2.resize(raw, self.size, dst=self._pairs, interpolation=cv2.INTER_LINEAR)
            self._scaled[:] = self._pairs[:, :, 0]
            quads = raw.reshape(src_h, src_w // 2, 4)
            cv2.resize(quads, chroma_size, dst=self._quads, interpolation=cv2.INTER_LINEAR)
            self._chroma[:] = self._quads[:, :, 1::2]
        if self._odd:
            self._luma[:height, :width] = self._scaled
        cv2.cvtColor(self._nv12, cv2.COLOR_YUV2BGR_NV12, dst=self._bgr)
        np.copyto(out, self._bgr[:height, :width])
