"""A contrast change that pivots about the scene's middle grey is exposure, not motion.

Auto-contrast, WDR and an ISP's tone curve brighten the dark half of the picture and darken
the bright half. The cheap check before the exposure fit averaged every pixel's clipped
difference, which such a change leaves at about zero although each pixel moved by up to 40
luma: the fit never ran, and the change was reported as motion for seconds (a false
episode, about a hundred inferences). The fit, once it runs, explains it fully.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from wattgate.config import GateConfig
from wattgate.policies.gating import MotionGate

FPS = 15.0
Image = npt.NDArray[np.float32]


def patchwork(seed: int) -> Image:
    """A 640x480 scene of flat patches from dark to bright grey."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, (12, 16)).astype(np.float32)
    return np.asarray(cv2.resize(coarse, (640, 480), interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize("gain", [0.5, 0.7, 1.25, 1.4])
def test_a_contrast_change_about_middle_grey_is_not_motion(gain: float) -> None:
    rng = np.random.default_rng(5)
    scene = patchwork(5)
    middle = float(np.median(scene))
    changed = (scene - middle) * gain + middle

    def shot(picture: Image) -> npt.NDArray[np.uint8]:
        return np.clip(picture + rng.normal(0, 3, picture.shape), 0, 255).astype(np.uint8)

    gate, t = MotionGate(GateConfig()), 0.0
    for _ in range(int(3 * FPS)):
        gate.update_luma(shot(scene), t)
        t += 1 / FPS
    verdicts = []
    for _ in range(int(10 * FPS)):
        verdicts.append(gate.update_luma(shot(changed), t))
        t += 1 / FPS
    moving = [i for i, v in enumerate(verdicts) if v.motion]
    assert moving == [], f"{len(moving)} frames of motion after a contrast change x{gain}"
    assert sum(v.infer for v in verdicts) <= 1  # the heartbeat at most
