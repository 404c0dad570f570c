"""What decoding an `infer` image costs the daemon in memory, and where its boxes land.

cv2.imdecode peaks at about twice its BGR result, so a 2 KB PNG of 4096x4096 pixels made
the daemon's peak memory grow by 97 MiB, twice what was stated, on boards of 512 MiB.
tracemalloc does not see OpenCV's allocations: each image is decoded in a fresh process
and measured by its peak resident size (VmHWM) before and after.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import ASTRONAUT_FACE, DaemonProcess, pinnable_board, skimage_image
from wattgate.daemon.commands import MAX_DECODE_BYTES, MAX_IMAGE_PIXELS, image_reply
from wattgate.drivers.images import decode_within
from wattgate.drivers.inference import Model, default_model_path

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent

MEASURE = """
import sys

def peak():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so the child started
    # with the test's own peak (the images it encoded) and saw no growth at all.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

from wattgate.daemon.commands import MAX_DECODE_BYTES, MAX_IMAGE_PIXELS
from wattgate.drivers import images
data = open(sys.argv[1], "rb").read()
before = peak()
try:
    image = images.decode_within(data, MAX_IMAGE_PIXELS, MAX_DECODE_BYTES).image
    outcome = "%dx%d" % (image.shape[1], image.shape[0])
except images.ImageError as exc:
    outcome = "refused: %s" % exc
after = peak()
print((after - before) * 1024, outcome)
"""


def gradient(width: int, height: int, channels: int) -> np.ndarray[Any, Any]:
    """A picture that compresses small but has coefficients to hold (zeros may stay unpaged)."""
    x = (np.arange(width, dtype=np.uint32) * 7) % 251
    y = (np.arange(height, dtype=np.uint32) * 3) % 241
    plane = ((x[None, :] + y[:, None]) % 256).astype(np.uint8)
    return plane if channels == 1 else np.dstack([plane, plane[::-1], plane.T[:height, :width]
                                                  if height == width else plane[:, ::-1]])


def encode(ext: str, image: np.ndarray[Any, Any], *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return bytes(data)


IMAGES = {
    # 2 KB: well under daemon.max_image_bytes
    "bilevel 4096x4096 png": lambda: encode(".png", np.zeros((4096, 4096), np.uint8),
                                            cv2.IMWRITE_PNG_BILEVEL, 1),
    "16-bit grey 4096x4096 png": lambda: encode(".png", np.zeros((4096, 4096), np.uint16)),
    "rgb 4096x2048 png": lambda: encode(".png", gradient(4096, 2048, 3)),
    "rgb 3840x2480 png": lambda: encode(".png", gradient(3840, 2480, 3)),  # near the limit
    "baseline 4096x4096 jpeg": lambda: encode(".jpg", gradient(4096, 4096, 3)),
    "progressive grey 4096x4096 jpeg": lambda: encode(
        ".jpg", gradient(4096, 4096, 1), cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "progressive 4:2:0 4096x4096 jpeg": lambda: encode(
        ".jpg", gradient(4096, 4096, 3), cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "progressive 4:4:4 4096x4096 jpeg": lambda: encode(
        ".jpg", gradient(4096, 4096, 3), cv2.IMWRITE_JPEG_PROGRESSIVE, 1,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
}


@pytest.mark.parametrize("name", IMAGES)
def test_decoding_a_client_image_stays_within_the_stated_memory(tmp_path: Path,
                                                                name: str) -> None:
    path = tmp_path / "image"
    path.write_bytes(IMAGES[name]())
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    grown, outcome = done.stdout.split(" ", 1)
    # A quarter more than stated: room for a noisy measure, not for a second buffer.
    assert int(grown) <= MAX_DECODE_BYTES * 1.25, (name, int(grown) / MIB, outcome)
    assert MAX_IMAGE_PIXELS >= 4096 * 4096  # each image passes the header's limit


def test_boxes_of_a_jpeg_decoded_smaller_are_in_the_client_s_pixels() -> None:
    """The astronaut at 3501x3501 pixels is decoded at half its size (1751x1751) to keep
    within MAX_DECODE_BYTES; the reply still gives its size and the face in its pixels. The
    real BlazeFace model, as the daemon runs it by default."""
    side = 3501
    picture = cv2.resize(skimage_image("astronaut.png"), (side, side),
                         interpolation=cv2.INTER_CUBIC)
    decoded = decode_within(encode(".jpg", picture), MAX_IMAGE_PIXELS, MAX_DECODE_BYTES)
    assert decoded.image.shape == (1751, 1751, 3)
    reply = image_reply(decoded, Model.load(str(default_model_path())).infer(decoded.image))
    assert (reply["width"], reply["height"]) == (side, side)
    [face] = reply["detections"]
    x0, y0, x1, y1 = face["box"]
    fx0, fy0, fx1, fy1 = (v * side / 512 for v in ASTRONAUT_FACE)
    assert fx0 <= (x0 + x1) / 2 <= fx1 and fy0 <= (y0 + y1) / 2 <= fy1, face
    assert x1 - x0 > (fx1 - fx0) / 2, face  # the face's size too, not only where it is


def resident(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("VmRSS:"))


def test_the_memory_client_images_take_is_one_decode_s_worth_however_many_come(
    start_daemon: Any, tmp_path: Path,
) -> None:
    """Client images decoded one after another keep about one decode's memory in the
    daemon. Each decode ran in a new thread; glibc's malloc gave the threads arenas of
    their own, up to 8 a core, each of which kept its last decode's buffers: on 2 cores
    the daemon's resident memory grew by 200-350 MiB over these 30 images and stayed
    there (it may grow more on more cores); with one thread, by about 35-55 MiB. Large,
    highly compressible PNGs within daemon.max_image_bytes, of sizes that do not fit in
    each other's freed space."""
    sizes = ((3000, 3000), (3000, 2000), (2048, 1536), (1600, 1200), (2500, 2500))
    images = []
    for width, height in sizes:
        picture = np.full((height, width, 3), 128, np.uint8)
        cv2.rectangle(picture, (width // 4, height // 4), (width // 2, height // 2),
                      (250, 250, 250), -1)
        data = encode(".png", picture, cv2.IMWRITE_PNG_COMPRESSION, 9)
        assert len(data) <= 45 * 1024, (width, height, len(data))
        images.append(base64.b64encode(data).decode())
    # With a board the daemon has more threads (the power tick's reads among them), and
    # a new thread seldom took the arena the last one had: without one, growth was small.
    daemon: DaemonProcess = start_daemon(config=pinnable_board(
        tmp_path, camera={"source": "synthetic:office"}))
    with daemon.connect() as client:
        client.settimeout(60)
        client.request("infer", image=images[0])
        before = resident(daemon.proc.pid)
        for n in range(30):
            reply = client.request("infer", image=images[n % len(images)])
            assert reply["width"] == sizes[n % len(sizes)][0], reply
        grown = resident(daemon.proc.pid) - before
    assert daemon.stop() == 0
    assert "still in a call" not in daemon.log()  # the thread kept for them ended at the stop
    # 3000x3000 BGR is 27 MB; what stays is about 2-3 of those, not one per arena
    assert grown <= 2 * MAX_DECODE_BYTES, grown / MIB
