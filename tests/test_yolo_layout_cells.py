"""A YOLOv8 output's orientation comes from the grid-cell count, not from which side is longer.

Models with many classes at a small input have more class channels (4+C) than grid cells:
yolov8n-oiv7 (601 classes) at 160 px has 525 cells, COCO (80 classes) at 64 px has 84 cells,
as many as its 4+80 channels. Read as "the longer side is the cells", Ultralytics' own
[1, 4+C, N] was refused, the rows-first [1, N, 4+C] was read the wrong way round (a nonsense
class count, no detections) and [1, 84, 84] was refused. Real .tflite models
(tests/tflite_builder.py), loaded and run as the daemon does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model
from wattgate.drivers.inference import Model

#: (input side in pixels, classes): the grid cells at strides 8, 16, 32 are
#: 20x20 + 10x10 + 5x5 = 525 at 160 px, and 8x8 + 4x4 + 2x2 = 84 at 64 px.
OIV7_AT_160 = (160, 601)
COCO_AT_64 = (64, 80)
PLANTED_CELL = 50
PLANTED_BOX = (0.5, 0.5, 0.2, 0.2)  # cx, cy, w, h, normalised


def channels_first(side: int, classes: int) -> np.ndarray[Any, Any]:
    """Ultralytics' [1, 4+C, N]: one box in PLANTED_CELL, its last class at 0.9."""
    cells = sum((side // stride) ** 2 for stride in (8, 16, 32))
    out = np.zeros((1, 4 + classes, cells), np.float32)
    out[0, :4, PLANTED_CELL] = PLANTED_BOX
    out[0, 4 + classes - 1, PLANTED_CELL] = 0.9
    return out


def run(tmp_path: Path, output: np.ndarray[Any, Any], side: int,
        classes: int) -> tuple[object, list[tuple[str, float, tuple[float, ...]]]]:
    """(kind, [(label, score, box in pixels)]) of a model with this one output, loaded with
    a labels file of exactly `classes` lines and run on a frame of the input's size."""
    path = constant_model(tmp_path / "yolo.tflite", [ConstOutput("Identity", output)],
                          size=(side, side))
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(classes)), encoding="utf-8")
    model = Model.load(str(path), labels=str(labels), score_threshold=0.5)
    frame = np.full((side, side, 3), 90, np.uint8)
    return model.info["kind"], [(d.label, round(d.score, 4), tuple(round(v, 1) for v in d.box))
                                for d in model.infer(frame).detections]


@pytest.mark.parametrize("side, classes, rows_first", [
    (*OIV7_AT_160, False),  # [1, 605, 525]
    (*OIV7_AT_160, True),   # [1, 525, 605]
    (*COCO_AT_64, False),   # [1, 84, 84]
])
def test_more_class_channels_than_cells_loads_with_the_right_classes_and_detects(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, side: int, classes: int,
        rows_first: bool) -> None:
    out = channels_first(side, classes)
    if rows_first:
        out = np.ascontiguousarray(out.transpose(0, 2, 1))
    with caplog.at_level(logging.WARNING):
        kind, found = run(tmp_path, out, side, classes)
    assert kind == "yolov8"
    low, high = 0.4 * side, 0.6 * side
    assert found == [(f"class{classes - 1}", 0.9, (low, low, high, high))]
    # One label a class: the decoder counted the classes the model has.
    assert "labels file" not in caplog.text, caplog.text
