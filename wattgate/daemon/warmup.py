"""Start-up warm-up: code that the first minutes of frames would run for the first time, run
before READY instead.

Machine code is paged in the first time it runs, and the daemon's resident memory grows by
it. The gate runs different OpenCV and numpy code while it calibrates, while the scene is
still, when something moves (contours, boxes), when something stops and is taken into the
background, and when the exposure or the lights change: `warm_gate` takes a throwaway gate
through all of that on a short generated clip, small so that its own work images cost little
(about a megabyte of code the office scene would otherwise page in at its first passer-by). A
model decodes detections (sorting, suppression, mapping boxes back) only when there are
some: `model_frame` is a warm-up input with a face in it.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import numpy.typing as npt

from wattgate.config import GateConfig
from wattgate.drivers.synthetic import face_sprite
from wattgate.policies.gating import CALIBRATION_S, STILL_S, GateVerdict, MotionGate

Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

# The throwaway gate's rows. Small work images, but not too small: numpy runs other code
# (buffered casts) on arrays of more than 8192 elements, and 48 x 64 takes the same paths
# as the default 100 x 133.
ROWS = 48
FPS = 15.0
BLOCK = 12  # side of the moving block, in pixels of the generated frames


def clip(rows: int = ROWS) -> Iterator[Image]:
    """BGR frames of a textured, noisy scene 2 x `rows` rows high (by default twice the most
    rows a warm-up gate has, so that sampling down runs too), made one at a time: still
    frames for the calibration and a few more, a dark block that crosses it and stops
    halfway long enough to be taken into the background, still frames until that settles,
    then an exposure change and a lamp switched on over half of it."""
    height, width = 2 * rows, (2 * rows * 4) // 3
    rng = np.random.default_rng(0)
    coarse = rng.uniform(70.0, 170.0, (6, 8, 3)).astype(np.float32)
    scene = np.asarray(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST),
                       np.float32)
    noise = [rng.normal(0.0, 2.0, scene.shape).astype(np.float32) for _ in range(4)]
    y, stop = (height - BLOCK) // 2, (width - BLOCK) // 2
    lamp = scene.copy()
    lamp[:, : width // 2] *= np.float32(1.8)  # half the room lit: no exposure fit explains it
    np.minimum(lamp, np.float32(255.0), out=lamp)

    def images() -> Iterator[Floats]:
        for _ in range(round(CALIBRATION_S * FPS) + 4):
            yield scene
        stopped = [stop] * round(STILL_S * FPS + 8)
        for x in [*range(0, stop, 4), *stopped, *range(stop, width, 4)]:
            moved = scene.copy()
            moved[y : y + BLOCK, x : x + BLOCK] = 20.0
            yield moved
        for _ in range(round((STILL_S + 1.0) * FPS)):
            yield scene
        for _ in range(3):
            yield scene * np.float32(1.15)
        for _ in range(3):
            yield lamp

    for i, image in enumerate(images()):
        yield np.clip(image + noise[i % len(noise)], 0, 255).astype(np.uint8)


def warm_gate(cfg: GateConfig) -> list[GateVerdict]:
    """Run throwaway gates configured like `cfg` (but at most ROWS rows) over `clip()`: one
    on the colour frames, one on their luma planes, as the two kinds of source deliver them.
    The colour gate's verdicts; none when the gate is off (it then runs no code of its own)."""
    if not cfg.enabled:
        return []
    small = cfg.model_copy(update={"frame_height": min(cfg.frame_height, ROWS)})
    # The clip at the warm-up's own size whatever the gate's: made at a smaller gate's
    # size, its lamp was too coarse for the gate to take as lighting (16 to 40 rows).
    gate = MotionGate(small)
    verdicts = [gate.update_bgr(bgr, i / FPS) for i, bgr in enumerate(clip())]
    gate = MotionGate(small)  # the first one's work images are free again for this one
    for i, bgr in enumerate(clip()):
        gate.update_luma(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), i / FPS)
    return verdicts


def model_frame(width: int, height: int) -> Image:
    """A black BGR frame of the camera's size with the bundled face (wattgate/data/face.png)
    in the middle, two fifths of the frame high: the bundled BlazeFace finds it, any other
    model at least runs on a frame of the real size. Black, so that only the face's rows are
    ever written (zeroed memory costs nothing until then)."""
    frame = np.zeros((height, width, 3), np.uint8)
    side = max(1, 2 * min(width, height) // 5)
    face = cv2.resize(face_sprite(), (side, side), interpolation=cv2.INTER_AREA)
    y, x = (height - side) // 2, (width - side) // 2
    frame[y : y + side, x : x + side] = face
    return frame
