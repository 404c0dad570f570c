"""Model loading and decoding against real TFLite files from tests/tflite_builder.py, on the
edges of what exporters write: outputs named by nothing but their position, and the like."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model, mean_channels_model
from wattgate.drivers.inference import Model, ModelError

#: The two orders TFLite SSD exports come in (REFERENCE.md, "Output layouts"): the
#: TFLite_Detection_PostProcess op's own, and EfficientDet-Lite's.
SSD_ORDERS = {
    "postprocess": ("boxes", "classes", "scores", "count"),
    "efficientdet": ("scores", "boxes", "count", "classes"),
}


def anonymous_ssd(path: Path, order: tuple[str, ...], scores: list[float],
                  classes: list[float], count: int) -> Path:
    """An SSD whose outputs are named as TF2 exports name them, which says nothing of roles;
    each detection's box is (ymin, xmin, ymax, xmax) = (0.25, 0.25, 0.75, 0.75)."""
    n = len(scores)
    values = {"boxes": np.tile([0.25, 0.25, 0.75, 0.75], (1, n, 1)), "classes": [classes],
              "scores": [scores], "count": [float(count)]}
    return constant_model(path, [ConstOutput(f"StatefulPartitionedCall:{i}", values[role])
                                 for i, role in enumerate(order)])


@pytest.mark.parametrize("order", SSD_ORDERS.values(), ids=SSD_ORDERS.keys())
def test_an_ssd_detection_of_score_one_is_found_when_names_do_not_tell(
    tmp_path: Path, order: tuple[str, ...]
) -> None:
    """Scores all whole (a sure 1.0, padding 0.0) beside class 0 told nothing by their values,
    and the larger maximum was taken for the class ids: the 1.0 became a class id, the zeros
    the scores, and the surest detection was lost. The positions say which is which."""
    path = anonymous_ssd(tmp_path / "ssd.tflite", order, [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], 1)
    model = Model.load(str(path), kind="ssd", labels=None)
    result = model.infer(np.zeros((32, 32, 3), np.uint8))
    assert [(d.label, d.score) for d in result.detections] == [("0", 1.0)]
    assert result.detections[0].box == pytest.approx((8.0, 8.0, 24.0, 24.0))


def test_a_model_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    """model.path set to the folder the models are in was reported as "not found"."""
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(ModelError, match=r"model file .*models: a directory, not a \.tflite"):
        Model.load(str(folder))
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match=r"model\.tflite: not a regular file"):
        Model.load(str(fifo))


def test_a_grey_model_takes_the_luma_of_the_picture(tmp_path: Path) -> None:
    """A model trained on a mono camera's frames has one input channel; it was refused as
    not an image input. It gets the picture's luma, in the same [-1, 1] as colour models."""
    path = mean_channels_model(tmp_path / "grey.tflite", channels=1, gain=0.5, bias=0.5)
    model = Model.load(str(path), kind="classifier", score_threshold=0.0)
    assert model.info["input"] == [32, 32, 1]
    bgr = np.empty((32, 32, 3), np.uint8)
    bgr[:] = (30, 200, 90)  # B, G, R
    luma = cv2.cvtColor(bgr[:1, :1], cv2.COLOR_BGR2GRAY)[0, 0]  # 0.299 R + 0.587 G + 0.114 B
    (det,) = model.infer(bgr).detections
    assert det.score == pytest.approx(luma / 255.0, abs=1e-5)  # (luma / 127.5 - 1) / 2 + 0.5
