"""Output decoding and model input as real models and real label files meet them.

The models are real .tflite files from tests/tflite_builder.py run by the real interpreter;
the labels files are written the way the model zoos ship them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model
from wattgate.config import ModelKind, parse_config
from wattgate.drivers.decoders import KINDS, LabelsError, TensorSpec, load_labels, make_decoder
from wattgate.drivers.inference import Model, ModelError

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


# --------------------------------------------------------------------------- YOLO layouts

YOLO_SIZE = (64, 48)  # input width, height: 8x6 + 4x3 + 2x2 = 64 cells at strides 8, 16, 32
#: cx, cy, w, h (normalised) and the class scores of the boxes that matter; every other row
#: is all zeros. Row 1 overlaps row 0 in the same class (suppressed), row 2 in another.
YOLO_BOXES = [
    ([0.30, 0.30, 0.2, 0.2], [0.9, 0.0, 0.0]),
    ([0.31, 0.30, 0.2, 0.2], [0.8, 0.1, 0.0]),
    ([0.30, 0.30, 0.2, 0.2], [0.0, 0.85, 0.0]),
    ([0.80, 0.80, 0.1, 0.1], [0.0, 0.0, 0.6]),
    ([0.50, 0.50, 0.1, 0.1], [0.0, 0.0, 0.3]),  # under the threshold
]
YOLO_EXPECTED = [("cat", 0.9, (0.2, 0.2, 0.4, 0.4)), ("dog", 0.85, (0.2, 0.2, 0.4, 0.4)),
                 ("bird", 0.6, (0.75, 0.75, 0.85, 0.85))]


Found = list[tuple[str, float, tuple[float, ...]]]


def yolo_detections(tmp_path: Path, output: np.ndarray[Any, Any],
                    kind: str = "auto") -> tuple[object, Found]:
    """(the kind the model reports, [(label, score, box normalised to the frame)]) of a
    one-output YOLO model, loaded with `kind` and run on a frame of the input's own size (no
    letterbox)."""
    path = constant_model(tmp_path / "yolo.tflite", [ConstOutput("Identity", output)],
                          size=YOLO_SIZE)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n", encoding="utf-8")
    model = Model.load(str(path), kind=kind, labels=str(labels), score_threshold=0.5)
    width, height = YOLO_SIZE
    frame = np.full((height, width, 3), 90, np.uint8)
    return model.info["kind"], [
        (d.label, round(d.score, 5),
         tuple(round(v / s, 5) for v, s in zip(d.box, (width, height) * 2)))
        for d in model.infer(frame).detections]


def yolov8_rows_first() -> np.ndarray[Any, Any]:
    """[1, N, 4+C] with N = 64, the grid cells of YOLO_SIZE at strides 8, 16, 32."""
    out = np.zeros((1, 64, 7), np.float32)
    for row, (box, scores) in enumerate(YOLO_BOXES):
        out[0, row * 9] = box + scores
    return out


def yolov5_output() -> np.ndarray[Any, Any]:
    """[1, N, 5+C] with N = 3 x 64 (3 anchors a cell); a box's score is its objectness x its
    class score."""
    out = np.zeros((1, 3 * 64, 8), np.float32)
    for row, (box, scores) in enumerate(YOLO_BOXES):
        out[0, row * 25] = box + [0.5] + [s * 2 for s in scores]  # 0.5 x (2 x score)
    out[0, 150] = [0.5, 0.5, 0.2, 0.2, 0.55, 0.9, 0.0, 0.0]  # 0.55 x 0.9: under 0.5
    return out


def test_yolov8_rows_first(tmp_path: Path) -> None:
    """YOLOv8 exported rows first, [1, N, 4+C] (onnx2tf and other converters): it was
    refused at load as no layout any decoder knew."""
    assert yolo_detections(tmp_path, yolov8_rows_first()) == ("yolov8", YOLO_EXPECTED)


@pytest.mark.parametrize("kind", ["auto", "yolov5"])
def test_yolov5_with_objectness(tmp_path: Path, kind: str) -> None:
    """YOLOv5's TFLite export, [1, N, 5+C] with 3 anchors a cell: a box's score is its
    objectness times its class score. It was refused at load; then it decoded under "auto"
    and "yolov8" while kind = "yolov5" in config.toml was an error."""
    assert yolo_detections(tmp_path, yolov5_output(), kind) == ("yolov5", YOLO_EXPECTED)


def test_the_kinds_config_takes_are_the_decoders() -> None:
    """config.toml's model.kind and the decoders' kinds are one list: "yolov5" was a
    decoder layout that config validation refused."""
    assert set(get_args(ModelKind)) == set(KINDS)
    config = parse_config({"model": {"kind": "yolov5", "variants": {
        "lite": {"path": "/models/yolov5n.tflite", "kind": "yolov5"}}}})
    assert config.model.kind == "yolov5"
    assert config.model.variants["lite"].kind == "yolov5"


@pytest.mark.parametrize("kind, output, expected, got", [
    ("yolov5", np.zeros((1, 7, 64)), r"\[1, N, 5\+C\] with N = 3 x", r"\[1, 7, 64\]"),
    ("yolov5", yolov8_rows_first(), r"\[1, N, 5\+C\] with N = 3 x", r"\[1, 64, 7\]"),
], ids=["v5-on-v8", "v5-on-v8-rows-first"])
def test_yolov5_on_a_yolov8_output_is_refused_at_load(
        tmp_path: Path, kind: str, output: np.ndarray[Any, Any], expected: str,
        got: str) -> None:
    """"yolov5" names YOLOv5's layout: on YOLOv8's it is a load error naming the file, the
    layout the kind expects and the one the model has, and which kind fits, not a model run
    with the wrong arithmetic (class 0's score read as an objectness)."""
    path = constant_model(tmp_path / "detector.tflite", [ConstOutput("Identity", output)],
                          size=YOLO_SIZE)
    with pytest.raises(ModelError) as err:
        Model.load(str(path), kind=kind)
    message = str(err.value)
    assert f"model file {path}: decoder {kind!r} does not fit" in message
    assert re.search(expected, message) and re.search(got, message), message
    assert 'kind = "yolov8"' in message, message


def test_yolov8_on_a_yolov5_output_decodes_it_as_yolov5_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """config.toml said to write "yolov8" for YOLOv5 models before "yolov5" was a kind, and
    they decoded right: an upgrade must not refuse them. The warning names the kind to use."""
    assert yolo_detections(tmp_path, yolov5_output(), "yolov8") == ("yolov5", YOLO_EXPECTED)
    assert 'kind = "yolov8" on YOLOv5\'s layout [1, 192, 8]' in caplog.text
    assert 'kind = "yolov5"' in caplog.text


def test_a_yolo_box_that_is_not_finite_leaves_suppression_working() -> None:
    """One NaN coordinate made the per-class NMS shift NaN for every box, every overlap NaN
    and so nothing suppressed: each object came out as a pile of duplicates. Decoder math
    only, so the arrays are given straight to the decoder with the model's tensor specs."""
    spec = TensorSpec("input", 0, (1, 48, 64, 3), np.dtype(np.float32), 0.0, 0)
    out = np.zeros((1, 7, 12), np.float32)
    out[0, :, 0] = [0.30, 0.30, 0.2, 0.2, 0.9, 0.0, 0.0]
    out[0, :, 1] = [0.31, 0.30, 0.2, 0.2, 0.8, 0.0, 0.0]  # IoU 0.9 with box 0: suppressed
    out[0, :, 2] = [np.nan, 0.70, 0.1, 0.1, 0.0, 0.7, 0.0]
    decoder = make_decoder("yolov8", spec, [TensorSpec("Identity", 1, out.shape, out.dtype,
                                                       0.0, 0)], ["cat", "dog", "bird"], 0.5)
    assert [(d.label, d.score) for d in decoder.decode([out])] == [("cat", pytest.approx(0.9))]


@pytest.mark.parametrize("max_detections", [1, 2])
def test_a_score_in_the_letterbox_bars_does_not_take_a_real_detection_s_place(
    tmp_path: Path, max_detections: int
) -> None:
    """A 16:9 frame letterboxed into a square input leaves bars above and below it. Box 0
    (0.95) lies wholly in the top bar, box 1 (0.9) in the picture. The cut to
    max_detections came before boxes in the bars were dropped: with 1, the result held
    no detection and said one was found."""
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput("TFLite_Detection_PostProcess",
                    np.array([[[0.0, 0.1, 0.15, 0.4], [0.4, 0.4, 0.6, 0.6]]], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:1", np.array([[0, 1]], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:2", np.array([[0.95, 0.9]], np.float32)),
        ConstOutput("TFLite_Detection_PostProcess:3", np.array([2.0], np.float32)),
    ], size=SIZE)
    labels = tmp_path / "labels.txt"
    labels.write_text("person\ncar\n")
    model = Model.load(str(path), kind="ssd", labels=str(labels), resize="letterbox",
                       max_detections=max_detections)
    result = model.infer(np.full((720, 1280, 3), 90, np.uint8))
    [car] = result.detections
    assert car.label == "car" and car.score == pytest.approx(0.9)
    assert car.box == pytest.approx((512.0, 232.0, 768.0, 488.0))
    assert result.found == 1  # the one in the bar was never in the picture
