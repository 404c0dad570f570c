"""A V4L2 camera's raw buffers shaped with the row stride the node says (VIDIOC_G_FMT).

ISPs pad each row past the width (RK3588's rkisp aligns bytesperline to 64 bytes, i.MX8MP's
ISI to 16 pixels) and may also round the buffer up to a page (sizeimage past the last row).
Such a buffer is not a whole number of rows, so the stride guessed from its size was the
width, and every row after the first came out sheared.

The buffers are built from a known picture with numpy, padded and tailed as those drivers
lay them out. VIDIOC_G_FMT is answered by an umockdev ioctl handler (run as
tests/test_camera_no_udev.py runs its testbed, under umockdev-wrapper). umockdev cannot
stream, so where a CaptureSource reads frames, OpenCV's VideoCapture is replaced by a stand-in
that hands the buffers over as OpenCV's V4L2 backend does with CONVERT_RGB off (one row of
bytesused bytes); the format is still asked of the emulated node through the real ioctl.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_v4l2_udev import PRELUDE, run_child
from wattgate.drivers import v4l2
from wattgate.drivers.camera import raw_from_bgr, raw_picture, stride_refusal
from wattgate.drivers.yuv import Layout, Yuv

Picture = np.ndarray[Any, Any]
PAGE = 4096
SIZE = (1000, 750)  # width, height: a width no ISP alignment leaves as it is
#: bytesperline for each layout at SIZE: NV12 aligned to 64 bytes (rkisp), YUYV to 16
#: pixels (ISI)
STRIDES: dict[Layout, int] = {"NV12": 1024, "YUYV": 2016}


def known_picture(width: int = SIZE[0], height: int = SIZE[1]) -> Picture:
    """A picture whose every row differs from its neighbours, so a shear shows."""
    rng = np.random.default_rng(7)
    bgr: Picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return bgr


def padded_buffer(whole: Picture, stride: int) -> Picture:
    """`whole` (rows x row bytes) as the ISP writes it: rows `stride` bytes apart, the
    buffer rounded up to a page (sizeimage), in one row as OpenCV hands it over."""
    rows = whole.reshape(whole.shape[0], -1)
    padded = np.full((rows.shape[0], stride), 0xEE, np.uint8)
    padded[:, : rows.shape[1]] = rows
    size = -(-padded.size // PAGE) * PAGE
    flat = np.concatenate([padded.reshape(-1), np.full(size - padded.size, 0xEE, np.uint8)])
    one: Picture = flat.reshape(1, -1)
    return one


@pytest.mark.parametrize("layout", ["NV12", "YUYV"])
def test_a_padded_buffer_with_a_tail_is_shaped_with_the_node_s_stride(layout: Layout) -> None:
    whole = raw_from_bgr(known_picture(), layout)
    stride = STRIDES[layout]
    buffer = padded_buffer(whole, stride)
    rows = whole.shape[0]
    assert buffer.size > rows * stride and buffer.size % rows  # a tail: not whole rows
    shaped = raw_picture(buffer, layout, SIZE, stride)
    assert np.array_equal(shaped.reshape(whole.shape), whole)
    # by its size alone, the buffer looks like tight rows: the guess shears the picture
    guessed = raw_picture(buffer, layout, SIZE)
    first_row = whole.shape[1]
    assert np.array_equal(guessed.reshape(-1)[:first_row], whole.reshape(-1)[:first_row])
    assert not np.array_equal(guessed.reshape(whole.shape), whole)


@pytest.mark.parametrize(("layout", "stride", "nbytes", "why"), [
    ("NV12", 640, 10**7, "narrower than a 1000-pixel NV12 row"),
    ("YUYV", 1999, 10**7, "narrower than a 1000-pixel YUYV row"),
    ("NV12", 1024, 1125 * 1024 - 1, "short of 1125 rows of 1024 bytes"),
])
def test_a_stride_the_buffer_cannot_hold_is_refused_and_the_guess_used(
    layout: Layout, stride: int, nbytes: int, why: str
) -> None:
    assert why in (stride_refusal(nbytes, layout, SIZE, stride) or "")
    whole = raw_from_bgr(known_picture(), layout)
    tight = whole.reshape(1, -1)  # a buffer of tight rows: the guess is right for it
    assert np.array_equal(raw_picture(tight, layout, SIZE, 4096).reshape(whole.shape), whole)


def test_vidioc_g_fmt_is_the_kernel_s_number() -> None:
    """_IOWR('V', 4, struct v4l2_format): 208 bytes where pointers have 8 (the union
    holding struct v4l2_window is aligned as its pointers), 204 where they have 4."""
    kernel_number = 0xC0D05604 if struct.calcsize("P") == 8 else 0xC0CC5604
    assert kernel_number == v4l2.VIDIOC_G_FMT


# The testbed: video0 a single-planar camera (uvcvideo-like), video1 a multi-planar ISP
# node (rkisp-like: EINVAL for the single-planar type), video2 a node that answers no
# VIDIOC_G_FMT at all. What each answers, laid out as include/uapi/linux/videodev2.h does.
BED = PRELUDE + r"""
import logging, struct
import cv2
import numpy as np

UNION_AT = struct.calcsize("@IP") - struct.calcsize("@P")  # 8 on 64-bit, 4 on 32-bit
FORMAT_SIZE = UNION_AT + 200
formats = {  # node: (buffer type answered, fourcc, width, height, bytesperline, sizeimage)
    "video0": (1, b"NV12", 1000, 750, 1024, 1155072),
    "video1": (9, b"YUYV", 1000, 750, 2016, 1515520),
}
asked = []

def answer(buf_type, fourcc, width, height, bytesperline, sizeimage):
    body = bytearray(FORMAT_SIZE)
    struct.pack_into("=I", body, 0, buf_type)
    code = int.from_bytes(fourcc, "little")
    if buf_type == 1:  # struct v4l2_pix_format
        struct.pack_into("=8I", body, UNION_AT, width, height, code, 1, bytesperline,
                         sizeimage, 8, 0)
    else:  # packed struct v4l2_pix_format_mplane, one plane
        struct.pack_into("=5I", body, UNION_AT, width, height, code, 1, 8)
        struct.pack_into("=II", body, UNION_AT + 20, sizeimage, bytesperline)
        body[UNION_AT + 180] = 1  # num_planes
    return bytes(body)

def g_fmt(handler, client):
    node = os.path.basename(client.get_devnode())
    if client.get_request() != v4l2.VIDIOC_G_FMT:
        client.complete(-1, 25)  # ENOTTY
        return True
    arg = client.get_arg().resolve(0, FORMAT_SIZE)
    # gi hands the argument's bytes over up to the first NUL: the type's low byte (1 or 9)
    buf_type = bytes(arg.data)[:1][0] if arg.data else 0
    asked.append([node, buf_type])
    if node not in formats:
        client.complete(-1, 25)  # ENOTTY: a driver without G_FMT
        return True
    if buf_type != formats[node][0]:
        client.complete(-1, 22)  # EINVAL: not this node's buffer type
        return True
    arg.update(0, answer(*formats[node]))
    client.complete(0, 0)
    return True

bed = UMockdev.Testbed.new()
handler = UMockdev.IoctlBase()
handler.connect("handle-ioctl", g_fmt)
for minor in range(3):
    node = f"video{minor}"
    assert bed.add_from_string(
        f"P: /devices/platform/isp/video4linux/{node}\nN: {node}\n"
        f"E: DEVNAME=/dev/{node}\nE: SUBSYSTEM=video4linux\nE: MAJOR=81\nE: MINOR={minor}\n")
    bed.attach_ioctl(f"/dev/{node}", handler)


class V4l2Capture:
    # Stands in for cv2.VideoCapture: umockdev cannot stream. Negotiates 1000x750 in
    # FOURCC and hands over BUFFERS as OpenCV's V4L2 backend does with CONVERT_RGB off.
    def __init__(self, *args):
        self.buffers = list(BUFFERS)

    def isOpened(self):
        return True

    def get(self, prop):
        return float({cv2.CAP_PROP_FRAME_WIDTH: 1000, cv2.CAP_PROP_FRAME_HEIGHT: 750,
                      cv2.CAP_PROP_FPS: 30, cv2.CAP_PROP_FOURCC: FOURCC}.get(prop, 0))

    def set(self, prop, value):
        return True

    def read(self):
        return (True, self.buffers.pop(0)) if self.buffers else (False, None)

    def release(self):
        pass


cv2.VideoCapture = V4l2Capture
logged = []

class Collect(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())

logging.getLogger("wattgate").addHandler(Collect())
logging.getLogger("wattgate").setLevel(logging.INFO)

def frames(node, fourcc, buffers):
    # the luma planes and colour of the frames a CaptureSource makes of `buffers`
    global BUFFERS, FOURCC
    BUFFERS, FOURCC = [np.load(b) for b in buffers], cv2.VideoWriter.fourcc(*fourcc)
    cfg = CameraConfig(source=node, format="yuyv", width=1000, height=750)
    source = CaptureSource(node, cfg, kind="v4l2")
    got = []
    for i in range(len(buffers)):
        frame = source.read()
        np.save(f"{OUT}/{os.path.basename(node)}-{i}-luma.npy", frame.luma)
        np.save(f"{OUT}/{os.path.basename(node)}-{i}-bgr.npy", frame.color())
        got.append(frame.size)
    source.close()
    return got
"""

READER = BED + r"""
out = {}
for node in ["/dev/video0", "/dev/video1", "/dev/video2", "/dev/video9"]:
    fmt = v4l2.query_capture_format(node)
    out[node] = fmt and [fmt.fourcc, fmt.width, fmt.height, fmt.bytesperline, fmt.sizeimage]
out["asked"] = asked
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_child(tmp_path_factory.mktemp("g-fmt"), READER)


def test_the_capture_format_is_read_from_the_node(reader: dict[str, Any]) -> None:
    """A single-planar node answers its pix format; an ISP's multi-planar node refuses
    that type and answers plane 0 of its pix_mp; a node that answers no G_FMT, or is not
    there, says nothing."""
    assert reader["/dev/video0"] == ["NV12", 1000, 750, 1024, 1155072]
    assert reader["/dev/video1"] == ["YUYV", 1000, 750, 2016, 1515520]
    assert reader["/dev/video2"] is None and reader["/dev/video9"] is None
    assert reader["asked"] == [["video0", 1], ["video1", 1], ["video1", 9],
                               ["video2", 1], ["video2", 9]]


CAPTURE = BED + r"""
OUT = sys.argv[3]
out = {}
out["video0"] = frames("/dev/video0", "NV12", [f"{OUT}/nv12-padded.npy"])
out["video1"] = frames("/dev/video1", "YUYV", [f"{OUT}/yuyv-padded.npy"])
out["video2"] = frames("/dev/video2", "YUYV", [f"{OUT}/yuyv-tight.npy"] * 2)
out["asked"] = asked
out["logged"] = [m for m in logged if "stride" in m]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("stride-frames")
    bgr = known_picture()
    np.save(out / "nv12-padded.npy", padded_buffer(raw_from_bgr(bgr, "NV12"), 1024))
    np.save(out / "yuyv-padded.npy", padded_buffer(raw_from_bgr(bgr, "YUYV"), 2016))
    np.save(out / "yuyv-tight.npy", raw_from_bgr(bgr, "YUYV").reshape(1, -1))
    return run_child(out, CAPTURE, str(out)), out


@pytest.mark.parametrize(("node", "layout"), [("video0", "NV12"), ("video1", "YUYV")])
def test_a_capture_of_a_padded_isp_buffer_gives_the_camera_s_picture(
    captured: tuple[dict[str, Any], Path], node: str, layout: Layout
) -> None:
    """The frame's luma is the picture's Y plane exactly, and its colour is the picture's
    (as far as YUV's chroma subsampling keeps it): not sheared rows."""
    result, out = captured
    assert result[node] == [list(SIZE)]
    whole = raw_from_bgr(known_picture(), layout)
    luma = whole[: SIZE[1]] if layout == "NV12" else whole.reshape(SIZE[1], SIZE[0], 2)[:, :, 0]
    assert np.array_equal(np.load(out / f"{node}-0-luma.npy"), luma)
    tight = raw_picture(whole.reshape(1, -1), layout, SIZE)  # tight rows: no stride to know
    assert np.array_equal(np.load(out / f"{node}-0-bgr.npy"), Yuv(layout, tight).bgr())


def test_without_a_format_the_stride_is_guessed_and_said_once(
    captured: tuple[dict[str, Any], Path],
) -> None:
    """A node that answers no VIDIOC_G_FMT: its tight buffers are shaped by the guess,
    the format is asked at the first frame and once again, and why is logged once."""
    result, out = captured
    assert result["video2"] == [list(SIZE)] * 2
    yuyv = raw_from_bgr(known_picture(), "YUYV").reshape(SIZE[1], SIZE[0], 2)
    assert np.array_equal(np.load(out / "video2-1-luma.npy"), yuyv[:, :, 0])
    assert result["asked"] == [["video0", 1], ["video1", 1], ["video1", 9]] + [
        ["video2", 1], ["video2", 9]] * 2
    assert result["logged"] == [
        "camera /dev/video2: the row stride is guessed from the buffer's size: "
        "the node does not answer VIDIOC_G_FMT"]
