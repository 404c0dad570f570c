"""Frame sources: V4L2 devices, video files, URLs/GStreamer pipelines and generated scenes.

Mechanism only. A source hands out frames with their index and capture time; pacing a
file to its own frame rate is the capture thread's job (it owns the clock), so a source
only says whether it wants pacing (`paced`) and at what rate (`fps`). Keeping a camera
alive (reopening, hotplug, stalls) is the supervisor's job (wattgate/daemon/camera_watch.py);
a source here just says why it stopped (`end_reason`).

Raw formats, so the gate never pays for colour on the frames it skips:

* MJPEG (`camera.format = "mjpeg"`, V4L2 with CAP_PROP_CONVERT_RGB off, or an MJPEG file or
  HTTP stream read as packets through FFmpeg with CAP_PROP_FORMAT = -1): the gate gets a
  reduced grayscale decode (libjpeg's DCT scaling, IMREAD_REDUCED_GRAYSCALE_2/4/8 — a
  fraction of a full decode). A frame that reaches the model is decoded in colour at the
  smallest DCT scale that still fills the model's input (`Frame.picture`).
* YUYV and NV12 (`camera.format = "yuyv"`; NV12 is what many CSI/ISP pipelines give): the Y
  plane as is, no conversion. A frame that reaches the model keeps its buffer (`Frame.yuv`):
  its input is converted to colour at the model's size (wattgate/drivers/yuv.py), not the
  camera's.
"""

from __future__ import annotations

import logging
import os
import re
import select
import stat
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Optional, Protocol

import cv2
import numpy as np

from wattgate.config import SYNTHETIC_PREFIX, CameraConfig, source_form
from wattgate.drivers import images, synthetic, v4l2
from wattgate.drivers.yuv import Layout, Yuv

log = logging.getLogger("wattgate.camera")

DEFAULT_LUMA_ROWS = 100  # the gate's default frame_height (config.gate.frame_height)
MAX_CORRUPT = 10  # consecutive undecodable frames (buffers or reads) before a read fails
FIFO_WAIT_S = 5.0  # longest an open waits for a FIFO's writer to send something
MARK_BYTES = 4096  # how much of a file's start and end tells one recording from another


class SourceError(Exception):
    """A source that cannot be opened; the message names the source."""


Image = np.ndarray[Any, Any]
SourceKind = Literal["synthetic", "v4l2", "file", "stream", "pipeline"]
EndReason = Literal["ended", "cut short", "read failed", "replaced"]
FileState = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


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
    yuv: Optional[Yuv] = None  # the camera's NV12 or YUYV buffer, when it gave one
    jpeg: Optional[Image] = None  # an MJPEG camera's compressed buffer

    @property
    def full_size(self) -> tuple[int, int]:
        """(width, height) of the frame, whichever form it came in."""
        if self.bgr is not None:
            return self.bgr.shape[1], self.bgr.shape[0]
        return self.size

    def picture(self, fit: tuple[int, int]) -> Image | Yuv:
        """What a model's input is made from most cheaply, when the frame takes `fit`
        (width, height) of it (Preparer.fit).

        The colour frame if it was decoded; else the camera's YUV buffer (converted to
        colour at the model's size); else, for MJPEG, libjpeg's decode at 1/8, 1/4 or 1/2
        of the frame's size, the smallest still as large as `fit` (at 1080p a quarter of
        the work of a full decode, and a cleaner picture for a small input than a resize
        of the full one); else the full colour decode. A picture smaller than the frame
        shows all of it: the preparer is told `full_size`, so boxes come back in the
        frame's pixels."""
        if self.bgr is not None:
            return self.bgr
        if self.yuv is not None:
            return self.yuv
        if self.jpeg is not None:
            width, height = self.size
            for factor, flag in _REDUCED_COLOUR:
                if -(-width // factor) >= fit[0] and -(-height // factor) >= fit[1]:
                    reduced = cv2.imdecode(self.jpeg, flag)
                    if reduced is not None and reduced.size:
                        return reduced
                    break
        return self.color()

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
    live: bool  # a camera: time passes whether or not we read; files and scenes have media time

    def read(self) -> Optional[Frame]:
        """The next frame, or None when the source has ended (a file without loop)."""

    def close(self) -> None: ...


def _now() -> tuple[float, float]:
    return time.time(), time.monotonic()


# -- raw buffers to frames (pure; the tests and the gate benchmark use them directly) -----------

# A camera's JPEG is decoded as the sensor gave it: imdecode otherwise turns a picture
# whose EXIF says "rotated" (some IP cameras and phone webcams send one), and the decode
# was then height x width while the frame's size, from the JPEG's header, said width x
# height, so the gate's and the model's boxes landed on the wrong pixels.
_AS_SENT = cv2.IMREAD_IGNORE_ORIENTATION
_COLOUR = cv2.IMREAD_COLOR | _AS_SENT
_REDUCED = {
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8 | _AS_SENT,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | _AS_SENT,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | _AS_SENT,
    1: cv2.IMREAD_GRAYSCALE | _AS_SENT,
}


_REDUCED_COLOUR = (
    (8, cv2.IMREAD_REDUCED_COLOR_8 | _AS_SENT),
    (4, cv2.IMREAD_REDUCED_COLOR_4 | _AS_SENT),
    (2, cv2.IMREAD_REDUCED_COLOR_2 | _AS_SENT),
)


def reduction_for(height: int, rows: int = DEFAULT_LUMA_ROWS) -> int:
    """The largest JPEG scale-down (8, 4, 2 or 1) that still leaves the gate `rows` rows."""
    return next((f for f in (8, 4, 2) if height // f >= rows), 1)


class _Once:
    """A colour decode that runs at most once, however often the frame's colour is asked."""

    def __init__(self, func: Callable[[], Optional[Image]], what: str) -> None:
        self._func: Optional[Callable[[], Optional[Image]]] = func
        self._what = what
        self._image: Optional[Image] = None

    def __call__(self) -> Image:
        if self._func is not None:
            self._image, self._func = self._func(), None
        if self._image is None:
            raise ValueError(f"{self._what}: cannot decode colour")
        return self._image


def mjpeg_luma(buf: Image, reduce: int) -> Optional[Image]:
    """The reduced grayscale decode of a JPEG buffer; None for a corrupt or empty buffer.

    An empty buffer (a UVC camera's 0-byte transfer after a USB error) is checked here:
    imdecode asserts on it, and that exception out of read() made the supervisor reopen
    the camera for what is one dropped frame."""
    if buf.size == 0:
        return None
    luma = cv2.imdecode(buf, _REDUCED[reduce])
    return None if luma is None or luma.size == 0 else luma


def frame_from_mjpeg(
    buf: Image, index: int, ts: float, mono: float, size: tuple[int, int], reduce: int
) -> Optional[Frame]:
    """A frame whose luma is a 1/reduce grayscale decode and whose colour waits for color().

    `size` is the full (width, height) the source expects, but the frame's own size comes
    from its JPEG header: a stream may change size mid-way, and some UVC cameras send
    another size than they negotiated, and `size` then disagreed with color() (so the
    gate's boxes were scaled to the wrong picture). `size` (or, at (0, 0), the reduced
    decode's size times `reduce`, which rounds up) is used only without a readable
    header. None when the buffer does not decode (a torn USB transfer): the caller drops
    that frame.
    """
    luma = mjpeg_luma(buf, reduce)
    if luma is None:
        return None
    data = np.ascontiguousarray(buf).reshape(-1)
    try:
        size = images.jpeg_size(data.data)
    except images.ImageError:
        if not size[0]:
            size = (luma.shape[1] * reduce, luma.shape[0] * reduce)
    decode = _Once(lambda: cv2.imdecode(data, _COLOUR), f"MJPEG frame {index}")
    return Frame(index, ts, mono, None, luma=luma, decode=decode, size=size, jpeg=data)


def frame_from_capture(data: Image, index: int, ts: float, mono: float) -> Optional[Frame]:
    """A frame from what VideoCapture.read() gives when no raw format was asked for.

    FFmpeg and V4L2 give BGR, but a GStreamer pipeline's appsink hands over its caps'
    format as is: GRAY8 (one channel), GRAY16_LE (uint16), BGRx/BGRA (four channels).
    Passed on unchanged, those made the gate fail on every frame. Grey becomes a luma
    plane (colour only for frames that reach the model), 16 bits are cut to their high
    byte, and four channels lose the fourth. None for anything else (float, two
    channels): the caller drops the frame.
    """
    if data.dtype == np.uint16:
        data = (data >> 8).astype(np.uint8)
    elif data.dtype != np.uint8:
        return None
    channels = 1 if data.ndim == 2 else data.shape[2] if data.ndim == 3 else 0
    if channels == 3:
        return Frame(index, ts, mono, data)
    if channels == 4:
        return Frame(index, ts, mono, cv2.cvtColor(data, cv2.COLOR_BGRA2BGR))
    if channels != 1:
        return None
    plane = data.reshape(data.shape[0], data.shape[1])
    decode = _Once(lambda: cv2.cvtColor(plane, cv2.COLOR_GRAY2BGR), f"grey frame {index}")
    size = (plane.shape[1], plane.shape[0])
    return Frame(index, ts, mono, None, luma=plane, decode=decode, size=size)


#: 4:2:0 layouts an appsink hands over as one plane of height*3/2 rows (the Y plane on
#: top), with OpenCV's conversion of each; NV12 keeps its buffer (Yuv) for the model
_PLANAR_420 = {"NV12": cv2.COLOR_YUV2BGR_NV12, "NV21": cv2.COLOR_YUV2BGR_NV21,
               "I420": cv2.COLOR_YUV2BGR_I420, "YV12": cv2.COLOR_YUV2BGR_YV12}
#: packed 4:2:2 layouts (height x width x 2): OpenCV's conversion and the Y byte's place
_PACKED_422 = {"YUY2": (cv2.COLOR_YUV2BGR_YUYV, 0), "YVYU": (cv2.COLOR_YUV2BGR_YVYU, 0),
               "UYVY": (cv2.COLOR_YUV2BGR_UYVY, 1)}
_CAPS_FORMAT = re.compile(r"format\s*=\s*(?:\(string\))?\s*\"?([A-Za-z0-9_]+)")


def appsink_format(pipeline: str) -> Optional[str]:
    """The video format a GStreamer pipeline's caps fix for its appsink: the last
    `format=` before the last `appsink` (`video/x-raw,format=I420 ! appsink`), or None when
    the pipeline leaves it to negotiation. OpenCV does not say which format it got, and
    the 4:2:0 ones all come as one plane of the same shape."""
    head = pipeline.rsplit("appsink", 1)[0]
    found = _CAPS_FORMAT.findall(head)
    return found[-1].upper() if found else None


def frame_from_appsink(data: Image, fmt: Optional[str], height: int, index: int, ts: float,
                       mono: float) -> Optional[Frame]:
    """A frame from a GStreamer appsink's buffer, whose caps asked for `fmt`.

    OpenCV hands 4:2:0 YUV (NV12, I420: what nvvidconv and the i.MX/Rockchip ISPs give)
    over as one channel of height*3/2 rows, and packed 4:2:2 as two channels. Taken as
    grey, such a frame was half as tall again, its chroma judged as picture by the gate and
    shown to the model. The Y plane is its top `height` rows, whatever the 4:2:0 layout,
    so a layout the pipeline does not name (`height` from the capture says it is 4:2:0)
    still gives the right luma; its colour is then the luma's grey. Anything else goes to
    frame_from_capture."""
    if data.dtype == np.uint8 and data.ndim == 3 and data.shape[2] == 2 and fmt in _PACKED_422:
        if fmt == "YUY2":
            return frame_from_yuyv(data, index, ts, mono)
        code, y = _PACKED_422[fmt]
        packed = data
        return Frame(index, ts, mono, None, luma=packed[:, :, y],
                     decode=_Once(lambda: cv2.cvtColor(packed, code), f"{fmt} frame {index}"),
                     size=(packed.shape[1], packed.shape[0]))
    rows = data.shape[0] if data.dtype == np.uint8 and data.ndim == 2 else 0
    if rows < 3 or rows % 3 or (height and rows != height * 3 // 2) or (
            not height and fmt not in _PLANAR_420):
        return frame_from_capture(data, index, ts, mono)
    if fmt == "NV12":
        return frame_from_nv12(data, index, ts, mono)
    plane, luma = data, data[: rows * 2 // 3]
    convert = _PLANAR_420.get(fmt or "")
    if convert is None:
        colour = _Once(lambda: cv2.cvtColor(luma, cv2.COLOR_GRAY2BGR), f"frame {index}")
    else:
        colour = _Once(lambda: cv2.cvtColor(plane, convert), f"{fmt} frame {index}")
    return Frame(index, ts, mono, None, luma=luma, decode=colour,
                 size=(luma.shape[1], luma.shape[0]))


def raw_picture(data: Image, layout: Layout, size: tuple[int, int], stride: int = 0) -> Image:
    """A YUYV or NV12 buffer shaped as its picture: height x width x 2 (YUYV) or
    height*3/2 x width (NV12), a view when it can be.

    OpenCV's V4L2 backend hands over a raw buffer with CAP_PROP_CONVERT_RGB off as one row
    of bytesused bytes (cap_v4l.cpp, retrieveFrame), whatever the format; taken as it
    came, an NV12 frame was 0 rows high and the gate divided by zero on every frame, and a
    short YUYV buffer (a torn USB transfer) raised out of read(), so the supervisor
    reopened the camera for one bad frame. A buffer already shaped by its backend is
    returned as it is.

    `stride` is the row stride the node says (VIDIOC_G_FMT's bytesperline, which an ISP
    aligns past the width), used when `stride_refusal` finds nothing against it. Without
    one the stride is guessed: the buffer being a whole number of rows of that stride, any
    other excess padding after the picture. The guess is wrong for a padded stride whose
    buffer also has a tail (sizeimage page-aligned past the last row): by size alone that
    looks like tight rows, and every row after the first came out sheared.

    ValueError, saying what is wrong, for a buffer shorter than the picture.
    """
    if data.ndim > 2 or (data.ndim == 2 and data.shape[0] > 1):
        return data
    width, height = size
    rows, row_bytes = _rows(layout, size)
    flat = data.reshape(-1)
    if width < 1 or rows < 1 or flat.size < rows * row_bytes:
        raise ValueError(f"a {layout} buffer of {flat.size} bytes, short of the "
                         f"{rows * row_bytes} a {width}x{height} picture takes")
    if not stride or stride_refusal(flat.size, layout, size, stride) is not None:
        stride = flat.size // rows if flat.size % rows == 0 else row_bytes
    picture = flat[: rows * stride].reshape(rows, stride)[:, :row_bytes]
    return picture.reshape(height, width, 2) if layout == "YUYV" else picture


def _rows(layout: Layout, size: tuple[int, int]) -> tuple[int, int]:
    """How many rows a `size` (width, height) picture in `layout` has, and its bytes a row
    without padding: YUYV's 2 a pixel, NV12's luma rows and then half as many of UV."""
    width, height = size
    if layout == "YUYV":
        return height, 2 * width
    return height * 3 // 2, width


def stride_refusal(
    nbytes: int, layout: Layout, size: tuple[int, int], stride: int
) -> Optional[str]:
    """Why a buffer of `nbytes` cannot hold a `size` (width, height) picture in `layout`
    at `stride` bytes a row (a stride narrower than a row, a buffer short of every row at
    that stride), or None when it can."""
    width, _ = size
    rows, row_bytes = _rows(layout, size)
    if stride < row_bytes:
        return f"a stride of {stride} bytes is narrower than a {width}-pixel {layout} row"
    if nbytes < rows * stride:
        return f"a buffer of {nbytes} bytes is short of {rows} rows of {stride} bytes"
    return None


def frame_from_yuyv(raw: Image, index: int, ts: float, mono: float) -> Frame:
    """A frame from a height x width x 2 YUYV buffer: its Y plane as is (a strided view)."""
    yuv = Yuv("YUYV", raw)
    return Frame(index, ts, mono, None, luma=raw[:, :, 0],
                 decode=_Once(yuv.bgr, f"YUYV frame {index}"), size=yuv.size, yuv=yuv)


def frame_from_nv12(raw: Image, index: int, ts: float, mono: float) -> Frame:
    """A frame from an NV12 buffer (height*3/2 rows): the Y plane is its top two thirds."""
    plane = raw.reshape(raw.shape[0], raw.shape[1])
    yuv = Yuv("NV12", plane)
    return Frame(index, ts, mono, None, luma=plane[:yuv.size[1]],
                 decode=_Once(yuv.bgr, f"NV12 frame {index}"), size=yuv.size, yuv=yuv)


def raw_from_bgr(bgr: Image, fourcc: str, quality: int = 90) -> Image:
    """What a camera delivering `fourcc` (MJPG, YUYV, NV12) hands over for this picture.

    For benchmarks and tests of the raw paths; a running daemon never encodes.
    """
    if fourcc == "MJPG":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        packet: Image = np.asarray(buf).reshape(1, -1)
        return packet
    if fourcc == "YUYV":
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2))
    if fourcc == "NV12":
        height, width = bgr.shape[:2]
        i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        quarter = (height // 2) * (width // 2)
        chroma = i420[height:].reshape(-1)
        uv = np.empty(2 * quarter, np.uint8)
        uv[0::2], uv[1::2] = chroma[:quarter], chroma[quarter:]
        nv12: Image = np.concatenate([i420[:height].reshape(-1), uv])
        return nv12.reshape(height * 3 // 2, width)
    raise ValueError(f"unknown raw format {fourcc!r}")


# -- sources -----------------------------------------------------------------------------------


# user:password@ in a URL (rtsp://admin:secret@10.0.0.5/stream, a GStreamer rtspsrc
# location): what the daemon says of its camera goes to every client of the socket (status,
# camera_lost events kept in the event log) and to the journal, none of which may show it.
# The password runs to the last @ before the path: cameras' passwords hold literal @s
# (rtsp://admin:Adm1n@2024@cam/...), which FFmpeg takes as such.
_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*):[^/\s]*@")
# GStreamer elements' own password properties (rtspsrc, souphttpsrc): user-pw, proxy-pw,
# with or without spaces around the = (gst-launch takes both), a value quoted or with its
# spaces escaped (user-pw=a\ b)
_PW_PROPERTY = re.compile(r"\b((?:user|proxy)-pw\s*=\s*)(\"[^\"]*\"|'[^']*'|(?:\\.|[^\s\"'\\])+)")
# A credential as a query parameter: many IP cameras take one so
# (videostream.cgi?user=admin&pwd=..., ?token=, ?access_token= or #access_token=,
# X-Amz-Signature=); some DVRs put such parameters in the path
# (rtsp://dvr:554/user=admin&password=...&channel=1).
# A name is one of these words, whole or after a prefix (api_key, client_secret), so
# ?keyframe= or ?monkey= stay as written. A value runs to the next &, space or double quote
# (which a URL holds only encoded: the end of a quoted GStreamer location=); a ' may be part
# of a password, and what follows a # is hidden too. One that begins a path segment
# (/pass=2/clip.avi) ends with the segment, so the rest of the path stays readable.
_SECRET_NAME = (r"((?:[A-Za-z0-9]+[_.-])*(?:pass|passwd|password|passphrase|pwd|pw|psw|"
                r"loginpas|token|auth|authbasic|key|apikey|secret|sig|signature|credential|"
                r"credentials)=)")
_QUERY_SECRET = re.compile(r"(?<=[?&;#])" + _SECRET_NAME + r"[^&\s\"]+", re.IGNORECASE)
_PATH_SECRET = re.compile(r"(?<=/)" + _SECRET_NAME + r"[^&/\s\"]+", re.IGNORECASE)


def without_password(text: str) -> str:
    """text with the password of every URL in it, of every credential in its query string
    (pwd=, token=, ...) and of every GStreamer user-pw= or proxy-pw= property, as ***; the
    user name stays, to tell which account the camera is opened with."""
    if "@" in text:
        text = _PASSWORD.sub(r"\1:***@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1***", text)
        text = _PATH_SECRET.sub(r"\1***", text)
        text = _PW_PROPERTY.sub(r"\1***", text)
    return text


def source_kind(spec: str) -> SourceKind:
    """What `camera.source` names (config.source_form); a path is a file, or a stream
    when it is a FIFO. A path that is not there (yet) is a file."""
    try:
        form = source_form(spec)
    except ValueError as exc:
        raise SourceError(f"camera.source {exc}") from None
    if form != "path":
        return form
    try:
        mode = os.stat(spec.strip()).st_mode
    except OSError:
        return "file"
    return "file" if stat.S_ISREG(mode) else "stream"  # a FIFO is a live stream


class SyntheticSource:
    """A generated scene; endless, since the scene wraps around."""

    def __init__(self, name: str, cfg: CameraConfig) -> None:
        self.scene = synthetic.make_scene(name, cfg.width, cfg.height, cfg.fps)
        self.description = f"synthetic:{name} {cfg.width}x{cfg.height}@{cfg.fps:g}"
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self.paced = cfg.realtime
        self.live = False
        self.end_reason: Optional[EndReason] = None
        self._index = 0

    def read(self) -> Optional[Frame]:
        ts, mono = _now()
        index = self._index
        self._index += 1
        return Frame(index, ts, mono, self.scene.frame(index))

    def close(self) -> None:
        pass


def fourcc_name(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() else ""


_V4L2_FOURCC = {"mjpeg": "MJPG", "yuyv": "YUYV"}
_RAW_V4L2 = {"MJPG": "MJPG", "YUYV": "YUYV", "YUY2": "YUYV", "NV12": "NV12"}


@dataclass(frozen=True)
class _Dropped:
    """A buffer that gave no frame: its index and why (None: a layout already warned about)."""

    index: int
    why: Optional[str]


class CaptureSource:
    """OpenCV VideoCapture over a device, a file, a URL, a FIFO or a GStreamer pipeline.

    `target` is what to open now (for V4L2, the node the supervisor resolved). A file can be
    opened at `start_frame` (resuming one that was cut short). `read_timeout_s` bounds a
    blocking read where the backend supports it (V4L2, FFmpeg), so a stalled camera returns
    instead of holding its thread forever.
    """

    def __init__(
        self,
        target: str,
        cfg: CameraConfig,
        *,
        kind: Optional[SourceKind] = None,
        luma_rows: int = DEFAULT_LUMA_ROWS,
        start_frame: int = 0,
        read_timeout_s: Optional[float] = None,
    ) -> None:
        self.spec = target
        self.shown = without_password(target)  # what messages and the status name it by
        self.kind: SourceKind = kind or source_kind(target)
        self.is_file = self.kind == "file"
        self.loop = cfg.loop and self.is_file
        self._fifo: Optional[int] = None  # a FIFO's read end, which FFmpeg reads as pipe:N
        self._file_id: Optional[tuple[int, int]] = None  # a file's (st_dev, st_ino) at open
        self._size_at_open: Optional[int] = None  # and its size then
        self.mark: Optional[FileMark] = None  # and its bytes then, to tell a rewrite from a cut
        self._state_seen: Optional[FileState] = None  # the file as the last read found it
        self._read_timeout_s = read_timeout_s
        self._cap = self._open(target, cfg, read_timeout_s)
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reported_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported_fps if 0 < reported_fps <= 1000 else cfg.fps
        self.paced = self.is_file and cfg.realtime
        self.live = not self.is_file
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if self.is_file and 0 < count < 1e12 else 0
        self.position = 0  # index of the next frame; after a cut, the first not read whole
        if self.is_file and start_frame > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
            self.position = start_frame
        self.raw = self._choose_raw(cfg)
        # the format a pipeline's caps fix for its appsink, which OpenCV does not report
        self.appsink = appsink_format(target) if self.kind == "pipeline" else None
        self.luma_rows = luma_rows
        self.reduce = reduction_for(self.height, luma_rows) if self.height else 4
        # a file FFmpeg decodes in colour that can end cut short is read one frame ahead
        self._holds = self.is_file and self.raw is None and self.frame_count > 0
        self._ahead: Optional[Frame] = None  # that frame, read but not delivered yet
        self.end_reason: Optional[EndReason] = None
        self.cut_state: Optional[FileState] = None  # the file when a read found it cut short
        self.corrupt = 0  # undecodable buffers dropped
        self._odd_layout = False  # frames of a layout frame_from_capture does not take
        self._dropping = False  # the last buffer was dropped: the next one is not logged again
        # a raw V4L2 capture's format as VIDIOC_G_FMT says it (its row stride), how often
        # it was asked, and whether guessing the stride instead was logged
        self._format: Optional[v4l2.CaptureFormat] = None
        self._format_asked = 0
        self._stride_guessed = False
        self._stride_for: tuple[tuple[str, int, int, int], int] = (("", -1, 0, 0), 0)
        fmt = f" {self.raw}" if self.raw else ""
        self.description = f"{self.shown} {self.width}x{self.height}@{self.fps:g}{fmt}"
        if self.kind == "v4l2" and (self.width, self.height) != (cfg.width, cfg.height):
            log.warning(
                "camera %s gives %dx%d, not the requested %dx%d",
                target, self.width, self.height, cfg.width, cfg.height,
            )

    def _open(
        self, spec: str, cfg: CameraConfig, read_timeout_s: Optional[float]
    ) -> cv2.VideoCapture:
        kind = self.kind
        timeout_ms = int(read_timeout_s * 1000) if read_timeout_s else 0
        if kind == "file":
            try:
                info = os.stat(spec)
            except OSError:
                info = None
            if info is None or not stat.S_ISREG(info.st_mode):
                raise SourceError(f"camera.source {spec!r}: no such file")
            self._file_id, self._size_at_open = (info.st_dev, info.st_ino), info.st_size
            self.mark = file_mark(spec)
            cap = cv2.VideoCapture(spec)
        elif kind == "v4l2":
            identity = v4l2.parse_identity(spec)
            if identity is None or identity.kind != "path":
                raise SourceError(f"camera.source {spec!r}: resolve it to a device node first")
            if not os.path.exists(identity.path):
                raise SourceError(f"camera.source {spec!r}: no such device")
            cap = cv2.VideoCapture(identity.path, cv2.CAP_V4L2)
            if cap.isOpened():
                if cfg.format in _V4L2_FOURCC:  # the format before the size (V4L2 backend)
                    code = cv2.VideoWriter.fourcc(*_V4L2_FOURCC[cfg.format])
                    cap.set(cv2.CAP_PROP_FOURCC, code)
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
                if timeout_ms:
                    cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms)
        elif kind == "pipeline":
            cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        else:  # a URL or a FIFO: FFmpeg, with bounded open and read where asked
            params = [] if not timeout_ms else [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                timeout_ms,
            ]
            self._fifo = _wait_for_writer(spec, min(read_timeout_s or FIFO_WAIT_S, FIFO_WAIT_S))
            url = spec if self._fifo is None else f"pipe:{self._fifo}"
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            self._close_fifo()
            # a file cut to nothing while it played (a recorder's O_TRUNC, a full disk) is
            # waited for as any file that does not open: say why this one does not
            empty = kind == "file" and self._size_at_open == 0
            why = "the file is empty" if empty else "cannot be opened"
            raise SourceError(f"camera.source {without_password(spec)!r}: {why}")
        return cap

    def _close_fifo(self) -> None:
        if self._fifo is not None:
            os.close(self._fifo)
            self._fifo = None

    def _choose_raw(self, cfg: CameraConfig) -> Optional[str]:
        """The raw format this capture gives, after asking for `camera.format`."""
        if cfg.format == "auto":
            return None
        cap = self._cap
        fourcc = fourcc_name(cap.get(cv2.CAP_PROP_FOURCC))
        if self.kind == "v4l2":
            raw = _RAW_V4L2.get(fourcc)
            if raw is not None and cap.set(cv2.CAP_PROP_CONVERT_RGB, 0):
                return raw
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 1)
        elif cfg.format == "mjpeg" and fourcc == "MJPG" and cap.set(cv2.CAP_PROP_FORMAT, -1):
            return "MJPG"  # FFmpeg hands over the JPEG packets undecoded
        log.warning(
            "camera %s: asked for %s, got %s; decoding in colour",
            self.shown, cfg.format, fourcc or "an unknown format",
        )
        return None

    def read(self) -> Optional[Frame]:
        """The next frame, or None once the source stopped (`end_reason` says why).

        A file FFmpeg decodes in colour that can end cut short (its header counts its
        frames) hands each frame over once the next has been read. A frame the cut tore
        in two is decoded from its first bytes, the rest concealed (a smeared or grey
        picture: libavcodec/h263dec.c ff_h263_decode_frame marks the macroblocks it could
        not read, error_resilience.c ff_er_frame_end fills them in) and was
        delivered as a real frame: the gate saw a change, the model ran on it, and the
        resume went on after it. The frame before a cut-short end is not delivered but read
        again once the rest of its bytes have come. No decode or read is added, only one
        frame kept; cameras, streams and MJPEG packets (a torn one does not decode, see
        _count_corrupt) are handed over as read."""
        if not self._holds:
            return self._read()
        frame, self._ahead = self._ahead, None
        if frame is None and self.end_reason is None:
            frame = self._read()
        if frame is None:
            return None
        self._ahead = self._read()
        if self._ahead is None and self.end_reason == "cut short":
            self.position = frame.index
            return None
        ts, mono = _now()  # the capture time is when it is handed over, as for any frame
        return replace(frame, ts=ts, mono=mono)

    def _read(self) -> Optional[Frame]:
        """The capture's next frame, or None once it stopped."""
        dropped = 0  # buffers dropped in a row
        last: Optional[_Dropped] = None  # the last of them, judged by what the next read gives
        while True:
            began = time.monotonic()
            if self.mark is not None and self._changed_and_rewritten():
                self._stop_replaced()
                return None
            ok, data = self._cap.read()
            if not ok:
                ok, data = self._read_past_undecodable(began)
            if not ok and self._ended(torn=last is not None) == "cut short":
                if self._rewritten():  # not cut: a new recording from its first frame
                    self._stop_replaced()
                    return None
                # a torn last buffer is not corrupt: its frame is read again once the rest
                # of its bytes have come
                self._cut_short(self.position - (last is not None), file_state(self.spec))
                return None
            self._count_corrupt(last)  # the next read came, so no cut tore it
            last = None
            if not ok and self._ended() == "ended" and self._replaced():
                self._stop_replaced()
                return None
            if not ok and self._ended() == "ended" and self.loop:
                ok, data = self._start_again()
            if not ok:
                self.end_reason = self._ended()
                return None
            ts, mono = _now()
            index = self.position
            self.position += 1
            try:
                frame = self._frame(data, index, ts, mono)
            except ValueError as exc:  # one bad buffer: dropped, the next may be whole
                state = file_state(self.spec) if self._size_at_open is not None else None
                if self._grown(state) and self._rewritten():
                    self._stop_replaced()
                    return None
                if self._grown(state):  # a cut tore it, and the rest came before this read:
                    self._cut_short(index, state)  # the next read would resync past it
                    return None
                last = _Dropped(index, str(exc))
            else:
                if frame is not None:
                    self._dropping = False
                    return frame
                last = _Dropped(index, None)
            dropped += 1
            if dropped >= MAX_CORRUPT:
                self._count_corrupt(last)
                log.warning("camera %s: %d frames in a row dropped", self.shown, dropped)
                self.end_reason = "read failed"
                return None

    def _read_past_undecodable(self, began: float) -> tuple[bool, Any]:
        """After a failed read() that began at `began`: the frame after the one that failed,
        if the capture goes on.

        FFmpeg's read() returns False for a frame it cannot decode (a damaged JPEG in an
        MJPEG file or HTTP stream, with camera.format = "auto") and gives the next frame at
        the next call. Taken for the end, one bad frame ended a whole recording as "cut
        short" there (the rest never played), or made a live camera lost and reconnected.
        A live source, or a file short of its header's frame count that has not changed
        since it was opened, is read again, up to MAX_CORRUPT times in a row, each failure
        counted as a corrupt frame. A file that gives nothing more, or has changed (still
        being written), is left as it was, at the frame that failed: cut short. A live
        source is read again only within half its read timeout from `began`: a read that
        timed out (a stalled camera, whose V4L2 read waits the whole timeout) is no frame
        that failed to decode, and ten more such waits kept the device from the reopen
        that follows for ten timeouts."""
        start = self.position
        timeout = None if self.is_file else self._read_timeout_s
        for _ in range(MAX_CORRUPT):
            if self.is_file and not (self._ended() == "cut short" and self._unchanged()):
                break
            if timeout and time.monotonic() - began >= timeout / 2:
                break
            self.position += 1  # the frame that did not decode
            ok, data = self._cap.read()
            if ok and self.is_file and not self._unchanged():
                break  # written to meanwhile: read again from a reopen at the failed frame
            if ok:
                for index in range(start, self.position):
                    self._count_corrupt(_Dropped(index, "it does not decode"))
                return ok, data
        self.position = start
        return False, None

    def _unchanged(self) -> bool:
        """Whether the file played is the one opened, at its size then."""
        state = file_state(self.spec)
        return (state is not None and state[:2] == self._file_id
                and state[2] == self._size_at_open)

    def _count_corrupt(self, dropped: Optional[_Dropped]) -> None:
        """Count a dropped buffer as corrupt, warning about the first of a run.

        Only once the read after it came: a buffer a file's cut tore in two (libavformat
        hands the bytes before the cut over as a short packet, av_get_packet in
        libavformat/utils.c) is not corrupt, and its frame is read again once the rest has
        come. It was warned about as dropped at every reopen while the file grew."""
        if dropped is None:
            return
        self.corrupt += 1
        if dropped.why is not None:
            if not self._dropping:
                log.warning("camera %s: frame %d dropped: %s", self.shown, dropped.index,
                            dropped.why)
            self._dropping = True

    def _cut_short(self, position: int, state: Optional[FileState]) -> None:
        """The read stops at frame ``position`` of a file cut short, as ``state`` now: the
        supervisor reopens it there, or ends it once it stays so (read returns None)."""
        self.end_reason = "cut short"
        self.cut_state = state
        self.position = position

    def _grown(self, state: Optional[FileState]) -> bool:
        """Whether the file played, now as ``state``, has grown since it was opened: a
        recording still being written. A buffer of it that does not decode may be one a
        cut tore whose rest has come since; the demuxer would resync at the next chunk
        (libavformat/avidec.c avi_sync) and the frame be lost, so it is read again from a
        reopen instead."""
        return (state is not None and state[:2] == self._file_id
                and state[2] != self._size_at_open)

    def _replaced(self) -> bool:
        """Whether camera.source now names another file than the one being read (a new
        recording renamed over it, log-rotation style), or holds another recording (see
        _rewritten). The open file is the old one, and playing it to its end and then
        looping it showed stale pictures for ever: at its end the source says "replaced",
        and the supervisor opens the new one."""
        if self._file_id is None:
            return False
        return bool(no_longer(self.spec, self._file_id, self.mark))

    def _rewritten(self) -> bool:
        """Whether the file read has been rewritten in place since it was opened: a
        recorder writing its next clip to the same path with O_TRUNC (``ffmpeg -y``,
        cv2.VideoWriter, ``cp new old``) keeps the inode, so _replaced() did not see it,
        and the new recording, shorter than the old one or still being written, was taken
        for the old one cut short: the supervisor reopened it at the old one's frame
        number, and its first frames were never played. A file cut short and not
        rewritten (still being appended to, or truncated) is still cut short."""
        return self.mark is not None and rewritten(self.spec, self.mark)

    def _changed_and_rewritten(self) -> bool:
        """Before each read of a file: whether it has changed since the last read (a stat)
        and the change is a rewrite in place (_rewritten, which reads its bytes: only then).
        Left to the read, a rewrite with larger frames went on decoding the old recording's
        index over the new bytes: seconds of pictures of neither recording, each taken for
        motion, before a read failed and said why."""
        state = file_state(self.spec)
        if state == self._state_seen:
            return False
        self._state_seen = state
        return self._rewritten()

    def _stop_replaced(self) -> None:
        """End the read: another file is in this one's place (_replaced)."""
        log.info("camera %s: a new file is in its place; this one ends", self.shown)
        self.end_reason = "replaced"

    def _start_again(self) -> tuple[bool, Image]:
        """A looping file at its end: its first frame, read after seeking back or, for a
        file that cannot seek (a raw MJPEG or H.264 stream has no index; the seek fails or
        the read after it does), after opening it again. Without the reopen such a file
        played once and ended although camera.loop was set."""
        self.position = 0
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, data = self._cap.read()
        if ok:
            return ok, data
        self._cap.release()
        self._cap = cv2.VideoCapture(self.spec)
        if self.raw == "MJPG":
            self._cap.set(cv2.CAP_PROP_FORMAT, -1)
        ok, data = self._cap.read()
        if not ok:
            log.warning("camera %s: cannot start the file again; it ends here", self.shown)
        return ok, data

    def _ended(self, torn: bool = False) -> EndReason:
        """Why a read failed: the end of a whole file, a file cut short, or a failure.

        A file one frame short of its count has ended: without a frame count in the header
        the count is duration x fps rounded (OpenCV cap_ffmpeg_impl.hpp get_total_frames),
        which may be one too many. ``torn``: the last buffer did not decode, so its frame
        may be one the cut tore, not read yet."""
        if not self.is_file:
            return "read failed"
        if self.frame_count and self.position - torn + 1 < self.frame_count:
            return "cut short"
        return "ended"

    def _frame(self, data: Image, index: int, ts: float, mono: float) -> Optional[Frame]:
        """The frame in what the capture gave; None or ValueError (why) to drop it."""
        raw = self.raw
        if raw is None:
            return self._as_given(data, index, ts, mono)
        if raw == "MJPG":
            frame = frame_from_mjpeg(data, index, ts, mono, (self.width, self.height), self.reduce)
            if frame is None:
                raise ValueError(f"an MJPEG buffer of {data.size} bytes that does not decode")
            if frame.size != (self.width, self.height):
                if self.width:  # not a stream that did not say its size before its first frame
                    log.warning("camera %s: MJPEG frames of %dx%d from frame %d on, not %dx%d",
                                self.shown, *frame.size, index, self.width, self.height)
                frame = self._resized(data, frame)
            return frame
        size = (self.width, self.height)
        if raw == "YUYV":
            picture = raw_picture(data, "YUYV", size, self._raw_stride("YUYV", data.size))
            return frame_from_yuyv(picture, index, ts, mono)
        picture = raw_picture(data, "NV12", size, self._raw_stride("NV12", data.size))
        return frame_from_nv12(picture, index, ts, mono)

    def _raw_stride(self, layout: Layout, nbytes: int) -> int:
        """The row stride of a V4L2 camera's raw buffers of `nbytes`, as the node says it
        (VIDIOC_G_FMT's bytesperline), or 0 to have raw_picture guess it.

        The format is asked at the first frame and once more when a buffer does not fit it
        (the format may have changed since); while it still does not (not a V4L2 node, the
        ioctl unanswered, another size, a stride the buffer cannot hold) the stride is
        guessed, and why is logged once. The answer is kept for the next buffer of the
        same layout, size and picture: while the stride is doubted, working out why (a
        formatted message) each frame was wasted work."""
        if self.kind != "v4l2":
            return 0
        key = (layout, nbytes, self.width, self.height)
        if self._stride_for[0] == key:
            return self._stride_for[1]
        self._stride_for = (key, self._find_stride(layout, nbytes))
        return self._stride_for[1]

    def _find_stride(self, layout: Layout, nbytes: int) -> int:
        if self._format_asked == 0:
            self._format = v4l2.query_capture_format(self.spec)
            self._format_asked = 1
        why = self._stride_doubt(layout, nbytes)
        if why is not None and self._format_asked == 1:
            self._format = v4l2.query_capture_format(self.spec)
            self._format_asked = 2
            why = self._stride_doubt(layout, nbytes)
        if why is None and self._format is not None:
            return self._format.bytesperline
        if not self._stride_guessed:
            self._stride_guessed = True
            log.info("camera %s: the row stride is guessed from the buffer's size: %s",
                     self.shown, why)
        return 0

    def _stride_doubt(self, layout: Layout, nbytes: int) -> Optional[str]:
        """Why the format the node said cannot give the stride of a buffer of `nbytes`, or
        None when it can."""
        fmt = self._format
        if fmt is None:
            return "the node does not answer VIDIOC_G_FMT"
        if (_RAW_V4L2.get(fmt.fourcc) != layout
                or (fmt.width, fmt.height) != (self.width, self.height)):
            return (f"the node says {fmt.fourcc!r} {fmt.width}x{fmt.height}, not the "
                    f"capture's {layout} {self.width}x{self.height}")
        if not fmt.bytesperline:
            return "the node says no bytesperline"
        return stride_refusal(nbytes, layout, (self.width, self.height), fmt.bytesperline)

    def follow_luma_rows(self, rows: int) -> None:
        """The gate's rows changed (a reload of gate.frame_height): an MJPEG stream's decode
        scale follows from the next frame, as chosen at open. Kept, it decoded 135 rows for a
        gate of 400 (the detail asked for never came) or 540 rows for one of 100, 16 times
        the work, until a restart. Called from another thread: one int is replaced."""
        self.luma_rows = rows
        if self.height:
            self.reduce = reduction_for(self.height, rows)

    def _resized(self, data: Image, frame: Frame) -> Frame:
        """An MJPEG stream's first frame of a new size: the size and the decode scale now
        follow it, and the frame's luma is decoded again at that scale if it changed.

        The scale was chosen once at open: a stream going from 1920x1080 to 320x240 kept
        1/8, and the gate got 30 rows instead of its `luma_rows` (~11x coarser, missing
        motion); one going the other way decoded 1080p at 1/2 for 540 rows, four times the
        work the gate needs. One extra reduced decode, only at a change of size."""
        self.width, self.height = frame.size
        self.description = f"{self.shown} {self.width}x{self.height}@{self.fps:g} MJPG"
        reduce = reduction_for(self.height, self.luma_rows)
        if reduce == self.reduce:
            return frame
        self.reduce = reduce
        again = frame_from_mjpeg(data, frame.index, frame.ts, frame.mono, frame.size, reduce)
        return again if again is not None else frame

    def _as_given(self, data: Image, index: int, ts: float, mono: float) -> Optional[Frame]:
        """The frame in a buffer in the backend's own layout (no raw format was asked for);
        None to drop it. Each layout that cannot be used is logged once."""
        if self.kind != "pipeline":
            frame = frame_from_capture(data, index, ts, mono)
        else:
            frame = frame_from_appsink(data, self.appsink, self.height, index, ts, mono)
            if (frame is not None and self.appsink not in _PLANAR_420 and data.ndim == 2
                    and frame.size[1] != data.shape[0] and not self._odd_layout):
                self._odd_layout = True  # 4:2:0 in a format the caps leave unnamed
                log.warning("camera %s: frames of %d rows are 4:2:0 YUV of %d rows in a "
                            "format the pipeline does not name; colour is taken as grey: "
                            "end its caps with format=NV12 or I420 before appsink",
                            self.shown, data.shape[0], frame.size[1])
        if frame is None and not self._odd_layout:
            self._odd_layout = True
            log.warning("camera %s: frames of %s %s are neither BGR, BGRA, grey nor a YUV "
                        "layout its caps name; dropping them", self.shown, data.dtype, data.shape)
        return frame

    def close(self) -> None:
        self._cap.release()
        self._close_fifo()


def file_state(path: str) -> Optional[FileState]:
    """The file at `path` as far as growing goes: which file it is, its size and its
    modification time (None if it cannot be stat'ed). Appending always changes the size; a
    write in place moves st_mtime unless it lands in the same tick of the coarse clock
    (fs/inode.c: file_update_time() stamps current_time())."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class FileMark:
    """A file as it was opened, to tell later whether it still holds the same recording
    (rewritten): which file it is, its size, its first bytes and its last ones then."""

    file_id: tuple[int, int]  # st_dev, st_ino
    size: int
    head: bytes  # the first MARK_BYTES
    tail_at: int  # where the last MARK_BYTES began
    tail: bytes


def file_mark(path: str) -> Optional[FileMark]:
    """The file at `path` as it is now (None if it cannot be read)."""
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            head = file.read(MARK_BYTES)
            tail_at = max(0, info.st_size - MARK_BYTES)
            file.seek(tail_at)
            tail = file.read(MARK_BYTES)
    except OSError:
        return None
    return FileMark((info.st_dev, info.st_ino), info.st_size, head, tail_at, tail)


def no_longer(path: str, file_id: tuple[int, int], mark: Optional[FileMark]) -> str:
    """How the file at `path` stopped being the recording opened as `file_id` (and taken
    `mark` of, if it could be): "replaced" (another file has the path now: a new recording
    renamed over it), "rewritten in place" (`rewritten`), or "" (it still is, or is gone:
    not replaced, so what was open ends or loops as it is)."""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    if (info.st_dev, info.st_ino) != file_id:
        return "replaced"
    return "rewritten in place" if mark is not None and rewritten(path, mark) else ""


def rewritten(path: str, mark: FileMark) -> bool:
    """Whether the file at `path`, still the file `mark` was taken of, has been rewritten in
    place since: a new recording written over it from its first byte (O_TRUNC), which
    keeps the inode.

    Told by bytes, since size and times cannot tell it: a recording still being written
    or copied only appends, so the bytes it had keep their place (the last ones `mark`
    holds; a header patched at the end of a recording changes its first ones, but grows
    the file); a file truncated by mistake keeps what it still holds, its first bytes
    among them. A rewrite changes the bytes at the old end once it gets that far, and
    its first ones (the container header's sizes and counts at least) once it has
    written them: until then (an empty file, a few bytes) it cannot be told from a cut.
    """
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if (info.st_dev, info.st_ino) != mark.file_id:
                return False
            head = file.read(len(mark.head))
            file.seek(mark.tail_at)
            tail = file.read(len(mark.tail))
    except OSError:
        return False
    if tail != mark.tail[: len(tail)]:
        return True  # bytes it had are not there any more: not appended to, nor cut
    common = min(len(head), len(mark.head))
    return info.st_size < mark.size and head[:common] != mark.head[:common]


def _wait_for_writer(path: str, timeout_s: float) -> Optional[int]:
    """For a FIFO: its read end, once a writer has sent something; None for anything else
    (a URL, a pipeline). SourceError if nothing comes within `timeout_s`.

    FFmpeg opens a FIFO with a blocking open(2), which waits for a writer for ever, past
    every open and read timeout: the capture's thread was lost, and each retry of the
    supervisor lost another, all of them opening the stream at once when a writer came.
    Here the read end is opened without blocking and polled instead; the caller hands
    the descriptor to FFmpeg as ``pipe:N`` (so FFmpeg never opens the path itself) and
    closes it after releasing the capture.
    """
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None  # not a path: FFmpeg says what it is
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = any(events & select.POLLIN for _, events in poller.poll(timeout_s * 1000))
        if ready:
            os.set_blocking(fd, True)  # FFmpeg's reads wait for data; EOF when the writer goes
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise SourceError(
        f"camera.source {path!r}: a FIFO no writer has sent anything to in {timeout_s:g} s"
    )


def resolve_device(spec: str, context: Any = None) -> str:
    """The device node `spec` means now (``auto``, ``udev:...``, a path); SourceError if none."""
    identity = v4l2.parse_identity(spec)
    if identity is None:
        raise SourceError(f"camera.source {spec!r}: not a V4L2 device")
    if identity.kind == "path":
        return identity.path
    device = v4l2.resolve(identity, v4l2.list_devices(context))
    if device is None:
        raise SourceError(f"camera.source {spec!r}: no camera matches {identity.describe()}")
    note = v4l2.udev_database_note(device)
    if note:
        log.warning("camera.source %s: %s", spec, note)
    return device.devnode


def open_source(cfg: CameraConfig, *, luma_rows: int = DEFAULT_LUMA_ROWS) -> Source:
    """Open the source `camera.source` names once; SourceError says why it cannot be used.

    The daemon wraps this in a SupervisedSource, which also waits for a source that is not
    there yet and reopens one that fails.
    """
    spec = cfg.source.strip()
    kind = source_kind(spec)
    if kind == "synthetic":
        name = spec[len(SYNTHETIC_PREFIX):]
        try:
            return SyntheticSource(name, cfg)
        except KeyError as exc:
            raise SourceError(f"camera.source {spec!r}: {exc.args[0]}") from None
    target = resolve_device(spec) if kind == "v4l2" else spec
    return CaptureSource(target, cfg, kind=kind, luma_rows=luma_rows)
