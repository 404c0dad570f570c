"""hello.model.labels counts the labels results can carry (docs/protocol.md, hello). An SSD
labels file whose first line names the background ("???" as TensorFlow's labelmap.txt,
"background") has that line skipped, as the postprocess's class ids leave it out: the
count said 4 for a file of 3 classes. hello's `model` is the loaded model's `info`; the
models are real .tflite files run by the real interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model
from wattgate.drivers.inference import Model

SIZE = (32, 32)


def ssd_model(tmp_path: Path) -> Path:
    """A postprocess SSD that finds one object of class 0."""
    return constant_model(tmp_path / "ssd.tflite", [
        ConstOutput("TFLite_Detection_PostProcess",
                    np.array([[[0.1, 0.1, 0.5, 0.5]]], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:1", np.array([[0]], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:2", np.array([[0.9]], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:3", np.array([1.0], np.float32)),
    ], size=SIZE)


def labels_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "labels.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("first", ["???", "background", "Background", None])
def test_an_ssd_counts_its_classes_not_the_background_line(
    tmp_path: Path, first: str | None
) -> None:
    text = "person\ncar\ndog\n" if first is None else f"{first}\nperson\ncar\ndog\n"
    model = Model.load(str(ssd_model(tmp_path)), kind="ssd",
                       labels=labels_file(tmp_path, text))
    assert model.info["labels"] == 3
    [found] = model.infer(np.full((32, 32, 3), 90, np.uint8)).detections
    assert found.label == "person"  # class 0 is the first real class, not the background


def test_a_classifier_counts_a_background_class_it_reports(tmp_path: Path) -> None:
    """A classifier's class 0 is its first output, named by the file's first line, whatever
    it is: a "background" there is a label its results carry."""
    path = constant_model(tmp_path / "classifier.tflite", [
        ConstOutput("Identity", np.array([[0.1, 0.1, 0.7, 0.1]], np.float32))], size=SIZE)
    model = Model.load(str(path), kind="classifier",
                       labels=labels_file(tmp_path, "background\nperson\ncar\ndog\n"))
    assert model.info["labels"] == 4
    assert [d.label for d in model.infer(np.full((32, 32, 3), 90, np.uint8)).detections] == [
        "car"]


def test_no_labels_file_counts_none(tmp_path: Path) -> None:
    assert Model.load(str(ssd_model(tmp_path)), kind="ssd").info["labels"] == 0
