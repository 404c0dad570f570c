"""Output decoding and model input as real models and real label files meet them.

The models are real .tflite files from tests/tflite_builder.py run by the real interpreter;
the labels files are written the way the model zoos ship them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model
from wattgate.drivers.decoders import LabelsError, load_labels
from wattgate.drivers.inference import Model

SIZE = (64, 64)  # square input, square frame: no letterbox padding
FRAME = np.full((64, 64, 3), 90, np.uint8)


def ssd_labels(tmp_path: Path, classes: Sequence[int], labels: str) -> list[str]:
    """The labels a postprocess SSD model reports for `classes` (one detection each, all
    apart) with a labels file holding `labels`, as Model.load reads it."""
    n = len(classes)
    top = np.arange(n, dtype=np.float32) / n
    boxes = np.stack([top, top, top + 0.8 / n, top + 0.8 / n], axis=1)
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput("TFLite_Detection_PostProcess", boxes[np.newaxis]),
        ConstOutput("TFLite_Detection_PostProcess:1", np.array([classes], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:2",
                    np.linspace(0.9, 0.6, n, dtype=np.float32)[np.newaxis]),
        ConstOutput("TFLite_Detection_PostProcess:3", np.array([float(n)], np.float32)),
    ], size=SIZE)
    labels_path = tmp_path / "labels.txt"
    labels_path.write_text(labels, encoding="utf-8")
    model = Model.load(str(path), kind="ssd", labels=str(labels_path), score_threshold=0.5)
    return [d.label for d in model.infer(FRAME).detections]


# Coral's coco_labels.txt (google-coral/test_data), which the README pairs with the Edge TPU
# SSD: "<id>  <name>" a line, the ids the model reports, with gaps where COCO has none.
CORAL_COCO = ("0  person\n1  bicycle\n2  car\n3  motorcycle\n4  airplane\n5  bus\n6  train\n"
              "7  truck\n8  boat\n9  traffic light\n10  fire hydrant\n12  stop sign\n"
              "13  parking meter\n")


def test_coral_labels_give_names_by_their_ids(tmp_path: Path) -> None:
    """Each line was taken whole as the label of its line number: "0  person" was the
    label (a client's labels=["person"] filter never matched) and past the gap at 11 each
    class had the next one's name."""
    assert ssd_labels(tmp_path, [0, 12, 10], CORAL_COCO) == ["person", "stop sign",
                                                               "fire hydrant"]


def test_id_colon_labels(tmp_path: Path) -> None:
    """pycoral's other spelling, "<id>:<name>"; ids not in the file come out as numbers."""
    assert ssd_labels(tmp_path, [1, 0, 3], "0:cat\n1:dog\n") == ["dog", "cat", "3"]


def test_plain_labels_that_start_with_a_digit_stay_whole(tmp_path: Path) -> None:
    """Only a file whose every line is "<id> <name>" is read by ids."""
    assert ssd_labels(tmp_path, [0, 1], "3D printer\n7 up\n") == ["3D printer", "7 up"]


def test_a_numbered_labels_file_with_a_huge_id_is_refused(tmp_path: Path) -> None:
    """The labels list is as long as the highest id: a typo must not allocate gigabytes."""
    path = tmp_path / "labels.txt"
    path.write_text("0 cat\n4000000000 dog\n", encoding="utf-8")
    with pytest.raises(LabelsError, match=r"labels\.txt: line 2 numbers class 4000000000"):
        load_labels(path)


# The labelmap.txt of TensorFlow's coco_ssd_mobilenet_v1 download: a "???" line for the
# background class first, and for each COCO id with no class. The postprocess op's class
# ids leave the background out: class 0 is person.
TF_COCO_LABELMAP = "???\nperson\nbicycle\ncar\nmotorcycle\n"


def test_ssd_labels_with_a_background_line_first(tmp_path: Path) -> None:
    """Every name was one class off: a person was published as "???", a car as "bicycle"."""
    assert ssd_labels(tmp_path, [0, 2], TF_COCO_LABELMAP) == ["person", "car"]
    assert ssd_labels(tmp_path, [1, 0], "background\nperson\nbicycle\n") == ["bicycle",
                                                                               "person"]


def test_an_ssd_exported_for_one_detection(tmp_path: Path) -> None:
    """With max_detections=1 in the export, classes and scores are [1, 1] and the count [1]
    had the shape [N] too: the model was refused as having no classes and scores."""
    assert ssd_labels(tmp_path, [2], "cat\ndog\nbird\n") == ["bird"]
