"""Decoders on the outputs of real .tflite files written by tests/tflite_builder.py.

Each model's outputs are constants the test chose, run through the interpreter, dequantized
from the real tensor details and decoded, so both the layout matching and the arithmetic are
checked against values known exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model, mean_rgb_model
from wattgate.drivers import runtime
from wattgate.drivers.decoders import (
    ClassifierDecoder,
    DecoderError,
    Detection,
    LabelsError,
    TensorSpec,
    blazeface_anchors,
    dequantize,
    load_labels,
    make_decoder,
)
from wattgate.drivers.inference import output_specs

SIZE = (64, 48)  # model input width, height


def run(path: Path, kind: str = "auto", labels: Optional[Sequence[str]] = None,
        threshold: float = 0.5) -> tuple[str, list[Detection]]:
    """Invoke the model once on a grey image; return (decoder kind, detections)."""
    interp = runtime.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp = TensorSpec.from_details(interp.get_input_details()[0])
    outs = output_specs(interp)
    decoder = make_decoder(kind, inp, outs, labels, threshold)
    interp.set_tensor(inp.index, np.full(inp.shape, 7, inp.dtype))
    interp.invoke()
    return decoder.kind, decoder.decode([dequantize(interp.get_tensor(s.index), s) for s in outs])


def close(det: Detection, label: str, score: float, box: Sequence[float]) -> bool:
    return (det.label == label and math.isclose(det.score, score, abs_tol=1e-5)
            and np.allclose(det.box, box, atol=1e-5))


# --------------------------------------------------------------------------- helpers


def test_dequantize_applies_scale_and_zero_point() -> None:
    spec = TensorSpec("t", 0, (1, 3), np.dtype(np.int8), 0.5, -10)
    out = dequantize(np.array([[-10, 0, 20]], np.int8), spec)
    assert out.dtype == np.float32
    assert out.tolist() == [[0.0, 5.0, 15.0]]
    floats = np.array([1.5], np.float32)
    assert dequantize(floats, TensorSpec("f", 0, (1,), np.dtype(np.float32), 0.0, 0)) is floats


def test_load_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\ufeffperson\nbicycle \n\ncar\n\n\n", encoding="utf-8")
    assert load_labels(path) == ["person", "bicycle", "", "car"]


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_load_labels_errors_name_the_file(tmp_path: Path, content: Optional[str]) -> None:
    path = tmp_path / "coco.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LabelsError, match=r"coco\.txt"):
        load_labels(path)


# --------------------------------------------------------------------------- BlazeFace


def test_anchor_layouts_from_input_size() -> None:
    short = blazeface_anchors(128, 128, (8, 16, 16, 16), 2)
    assert short.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors each; first cell centre at half a cell.
    assert np.allclose(short[:2], [[1 / 32, 1 / 32]] * 2)
    assert np.allclose(short[2], [3 / 32, 1 / 32])
    # stride 16 starts at 512: 8x8 cells, 6 anchors each (three layers merged).
    assert np.allclose(short[512:518], [[1 / 16, 1 / 16]] * 6)
    assert np.allclose(short[-1], [15 / 16, 15 / 16])
    full = blazeface_anchors(192, 192, (4,), 1)
    assert full.shape == (2304, 2)
    assert np.allclose(full[49], [3 / 96, 3 / 96])


def test_blazeface_sigmoid_and_weighted_nms(tmp_path: Path) -> None:
    n = 896
    reg = np.zeros((1, n, 16), np.float32)
    logits = np.full((1, n, 1), -20.0, np.float32)
    anchors = blazeface_anchors(128, 128, (8, 16, 16, 16), 2)
    # Two anchors of one stride-8 cell (x=5, y=6) see the same 20-px face, 2 px apart.
    a, b = (6 * 16 + 5) * 2, (6 * 16 + 5) * 2 + 1
    reg[0, a, :4] = [0.0, 0.0, 20.0, 20.0]
    reg[0, b, :4] = [2.0, 0.0, 20.0, 20.0]
    logits[0, a, 0], logits[0, b, 0] = 2.0, 1.0
    # A lone face on a stride-16 anchor, with a logit far past the +-100 clip.
    c = 512 + (2 * 8 + 6) * 6 + 3
    reg[0, c, :4] = [-4.0, 6.0, 30.0, 16.0]
    logits[0, c, 0] = 500.0
    # Just below the threshold: sigmoid(-0.1) < 0.5.
    logits[0, 700, 0] = -0.1
    path = constant_model(tmp_path / "blaze.tflite", [
        ConstOutput("classificators", logits), ConstOutput("regressors", reg),
    ], size=(128, 128))

    kind, dets = run(path)
    assert kind == "blazeface"
    assert len(dets) == 2

    sa, sb = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))
    cx = anchors[a][0] + (2.0 / 128) * sb / (sa + sb)  # score-weighted mean of the two
    cy = anchors[a][1]
    half = 10 / 128
    assert close(dets[0], "face", 1.0, (
        anchors[c][0] - 4 / 128 - 15 / 128, anchors[c][1] + 6 / 128 - 8 / 128,
        anchors[c][0] - 4 / 128 + 15 / 128, anchors[c][1] + 6 / 128 + 8 / 128,
    ))
    assert close(dets[1], "face", sa, (cx - half, cy - half, cx + half, cy + half))


def test_blazeface_rejects_unknown_anchor_count(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "odd.tflite", [
        ConstOutput("regressors", np.zeros((1, 100, 16))),
        ConstOutput("classificators", np.zeros((1, 100, 1))),
    ], size=(128, 128))
    with pytest.raises(DecoderError, match=r"no BlazeFace anchor layout gives 100 anchors"):
        run(path, "blazeface")


# --------------------------------------------------------------------------- SSD

SSD_BOXES = np.array([[[0.1, 0.2, 0.5, 0.6],   # ymin, xmin, ymax, xmax
                       [0.0, 0.0, 1.0, 1.0],
                       [-0.1, 0.5, 0.4, 1.2],  # spills out: clipped
                       [0.3, 0.3, 0.4, 0.4],   # past count
                       [0.0, 0.0, 0.0, 0.0]]], np.float32)
SSD_CLASSES = np.array([[0.0, 2.0, 1.0, 0.0, 0.0]], np.float32)
SSD_SCORES = np.array([[0.75, 0.25, 0.875, 0.99, 0.0]], np.float32)
SSD_COUNT = np.array([3.0], np.float32)


def _ssd_outputs(names: dict[str, str], order: Sequence[str]) -> list[ConstOutput]:
    values = {"boxes": SSD_BOXES, "classes": SSD_CLASSES, "scores": SSD_SCORES,
              "count": SSD_COUNT}
    return [ConstOutput(names[role], values[role]) for role in order]


@pytest.mark.parametrize("names, order", [
    # The TFLite_Detection_PostProcess op's own order and names.
    ({"boxes": "TFLite_Detection_PostProcess", "classes": "TFLite_Detection_PostProcess:1",
      "scores": "TFLite_Detection_PostProcess:2", "count": "TFLite_Detection_PostProcess:3"},
     ["boxes", "classes", "scores", "count"]),
    # EfficientDet-Lite's order (scores, boxes, count, classes) with descriptive names.
    ({"boxes": "detection_boxes", "classes": "detection_classes",
      "scores": "detection_scores", "count": "num_detections"},
     ["scores", "boxes", "count", "classes"]),
    # Names that say nothing: the values tell class ids (whole numbers) from scores.
    ({"boxes": "Identity", "classes": "Identity_1", "scores": "Identity_2",
      "count": "Identity_3"},
     ["scores", "count", "classes", "boxes"]),
], ids=["postprocess-order", "efficientdet-order", "anonymous"])
def test_ssd_matches_outputs_by_shape_and_name(
    tmp_path: Path, names: dict[str, str], order: list[str]
) -> None:
    path = constant_model(tmp_path / "ssd.tflite", _ssd_outputs(names, order))
    kind, dets = run(path, labels=["person", "bicycle", "car"])
    assert kind == "ssd"
    assert len(dets) == 2  # 0.25 is under the threshold, 0.99 is past count
    assert close(dets[0], "bicycle", 0.875, (0.5, 0.0, 1.0, 0.4))
    assert close(dets[1], "person", 0.75, (0.2, 0.1, 0.6, 0.5))


def test_ssd_without_labels_uses_class_ids(tmp_path: Path) -> None:
    order = ["boxes", "classes", "scores", "count"]
    path = constant_model(tmp_path / "ssd.tflite",
                          _ssd_outputs({r: f"TFLite_Detection_PostProcess:{r}" for r in order},
                                       order))
    _, dets = run(path, "ssd", threshold=0.2)
    assert [(d.label, d.score) for d in dets] == [("1", 0.875), ("0", 0.75), ("2", 0.25)]


@pytest.mark.parametrize("count", [3.0, math.nan], ids=["count", "nan-count"])
def test_ssd_drops_what_is_not_finite(tmp_path: Path, count: float) -> None:
    """A broken model's NaN or infinity never becomes a detection (it is not JSON)."""
    scores = SSD_SCORES.copy()
    scores[0, 1] = np.inf  # a whole-frame box with an infinite score
    boxes = SSD_BOXES.copy()
    boxes[0, 2, 1] = np.nan  # the spilling box, now with a NaN edge
    values = {"boxes": boxes, "classes": SSD_CLASSES, "scores": scores,
              "count": np.array([count], np.float32)}
    order = ["boxes", "classes", "scores", "count"]
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput(f"TFLite_Detection_PostProcess:{i}" if i else "TFLite_Detection_PostProcess",
                    values[role]) for i, role in enumerate(order)])
    _, dets = run(path, "ssd", labels=["person", "bicycle", "car"])
    if math.isnan(count):  # the count is not to be trusted: nothing is
        assert dets == []
    else:
        assert len(dets) == 1 and close(dets[0], "person", 0.75, (0.2, 0.1, 0.6, 0.5))


def test_ssd_drops_class_ids_that_are_not_whole_numbers_in_range(tmp_path: Path) -> None:
    """A NaN, infinite or huge class id became the label '-9223372036854775808' (and a
    numpy cast warning); a fractional one, which means the outputs are not what they seem,
    was rounded to a class."""
    classes = np.array([[np.nan, np.inf, 1e30, 2.5, -1.0, 1.0, 0.0]], np.float32)
    boxes = np.tile(np.array([0.1, 0.2, 0.5, 0.6], np.float32), (1, 7, 1))
    values = {"boxes": boxes, "classes": classes,
              "scores": np.full((1, 7), 0.9, np.float32), "count": np.array([7.0], np.float32)}
    order = ["boxes", "classes", "scores", "count"]
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput(f"TFLite_Detection_PostProcess:{i}" if i else "TFLite_Detection_PostProcess",
                    values[role]) for i, role in enumerate(order)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, dets = run(path, "ssd", labels=["person", "bicycle", "car"])
    assert sorted(d.label for d in dets) == ["bicycle", "person"]


# --------------------------------------------------------------------------- YOLOv8


def _yolo_output(pixels: bool) -> np.ndarray[Any, Any]:
    rows = {  # cx, cy, w, h, class 0..2 scores
        0: ([0.30, 0.30, 0.2, 0.2], [0.9, 0.0, 0.0]),
        1: ([0.31, 0.30, 0.2, 0.2], [0.8, 0.1, 0.0]),   # IoU 0.9 with row 0: suppressed
        2: ([0.30, 0.30, 0.2, 0.2], [0.0, 0.85, 0.0]),  # same place, other class: kept
        3: ([0.80, 0.80, 0.1, 0.1], [0.0, 0.0, 0.6]),
        4: ([0.50, 0.50, 0.1, 0.1], [0.0, 0.0, 0.3]),   # under threshold
        5: ([0.70, 0.20, 0.1, 0.1], [0.7, 0.0, 0.0]),
    }
    out = np.zeros((1, 7, 12), np.float32)
    for i, (box, scores) in rows.items():
        xywh = np.array(box) * ([SIZE[0], SIZE[1]] * 2 if pixels else 1)
        out[0, :4, i] = xywh
        out[0, 4:, i] = scores
    return out


@pytest.mark.parametrize("pixels", [False, True], ids=["normalised", "pixels"])
def test_yolov8_transpose_and_per_class_nms(tmp_path: Path, pixels: bool) -> None:
    path = constant_model(tmp_path / "yolo.tflite",
                          [ConstOutput("Identity", _yolo_output(pixels))], size=SIZE)
    kind, dets = run(path, labels=["cat", "dog", "bird"])
    assert kind == "yolov8"
    assert [d.label for d in dets] == ["cat", "dog", "cat", "bird"]
    assert close(dets[0], "cat", 0.9, (0.2, 0.2, 0.4, 0.4))
    assert close(dets[1], "dog", 0.85, (0.2, 0.2, 0.4, 0.4))
    assert close(dets[2], "cat", 0.7, (0.65, 0.15, 0.75, 0.25))
    assert close(dets[3], "bird", 0.6, (0.75, 0.75, 0.85, 0.85))


def test_yolov8_int8_output_is_dequantized(tmp_path: Path) -> None:
    # real = 0.01 x (q + 100): q spans -128..127 -> -0.28..2.27.
    path = constant_model(tmp_path / "yolo_q.tflite", [
        ConstOutput("Identity", _yolo_output(False), np.int8, (0.01, -100)),
    ], size=SIZE)
    _, dets = run(path)
    assert [d.label for d in dets] == ["0", "1", "0", "2"]
    assert close(dets[0], "0", 0.9, (0.2, 0.2, 0.4, 0.4))


# --------------------------------------------------------------------------- classifier


def test_classifier_top5_with_labels_and_uint8_output(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(8)))
    q = np.array([[10, 200, 30, 180, 40, 100, 60, 120]], np.float32)
    # The usual quantized classifier output: uint8, scale 1/256, zero point 0.
    path = constant_model(tmp_path / "cls.tflite", [
        ConstOutput("probabilities", q / 256, np.uint8, (1 / 256, 0)),
    ])
    kind, dets = run(path, labels=load_labels(labels), threshold=0.1)
    assert kind == "classifier"
    assert [(d.label, d.score) for d in dets] == [
        ("class1", 200 / 256), ("class3", 180 / 256), ("class7", 120 / 256),
        ("class5", 100 / 256), ("class6", 60 / 256),
    ]
    assert all(d.box == (0.0, 0.0, 1.0, 1.0) for d in dets)


def test_classifier_logits_get_softmax(tmp_path: Path) -> None:
    logits = np.array([[2.0, 1.0, -1.0]], np.float32)
    path = constant_model(tmp_path / "logits.tflite", [ConstOutput("logits", logits)])
    _, dets = run(path, "classifier", threshold=0.2)
    e = np.exp(logits[0] - 2.0)
    assert [d.label for d in dets] == ["0", "1"]
    assert np.allclose([d.score for d in dets], (e / e.sum())[:2])


def classifier(inp: TensorSpec, out: TensorSpec) -> ClassifierDecoder:
    decoder = make_decoder("classifier", inp, [out], None, 0.1)
    assert isinstance(decoder, ClassifierDecoder)
    return decoder


def loaded_classifier(path: Path) -> tuple[TensorSpec, ClassifierDecoder]:
    """(the output's spec, the classifier decoder), as Model.load makes them."""
    interp = runtime.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    (out,) = output_specs(interp)
    return out, classifier(TensorSpec.from_details(interp.get_input_details()[0]), out)


@pytest.mark.parametrize("dtype, quant", [(np.uint8, (1 / 256, 0)), (np.int8, (1 / 256, -128))])
def test_a_quantized_output_of_0_to_1_holds_probabilities(tmp_path: Path, dtype: Any,
                                                          quant: tuple[float, int]) -> None:
    """TFLite's quantized SOFTMAX writes scale 1/256 from zero (uint8 zero point 0, int8
    -128; kernels/activations.cc SoftmaxPrepare): that tensor holds [0, 1) and nothing
    else, whatever the graph's last operator is."""
    path = constant_model(tmp_path / "cls.tflite", [
        ConstOutput("probabilities", [[0.25, 0.5, 0.25]], dtype, quant)])
    out, decoder = loaded_classifier(path)
    assert out.producer == "ADD"  # past the QUANTIZE, to what computes the values
    assert decoder.logits is False


@pytest.mark.parametrize("fully_connected, softmax, producer, logits", [
    (False, False, "ADD", None),  # the graph does not say: the first frames will
    (True, False, "FULLY_CONNECTED", True),
    (True, True, "SOFTMAX", False),
    (False, True, "SOFTMAX", False),
], ids=["add", "fully-connected", "fully-connected-softmax", "add-softmax"])
def test_the_graph_says_whether_a_classifier_gives_logits(
        tmp_path: Path, fully_connected: bool, softmax: bool, producer: str,
        logits: Optional[bool]) -> None:
    out, decoder = loaded_classifier(mean_rgb_model(
        tmp_path / "cls.tflite", fully_connected=fully_connected, softmax=softmax))
    assert out.producer == producer
    assert decoder.logits is logits
    # a quantized output of another range than 0..1 does not say either: the graph decides
    image = TensorSpec("input", 0, (1, 32, 32, 3), np.dtype(np.float32), 0.0, 0)
    other = TensorSpec("q", 1, (1, 3), np.dtype(np.uint8), 0.1, 128, producer)
    assert classifier(image, other).logits is logits


# --------------------------------------------------------------------------- errors


def test_auto_rejects_unknown_outputs_naming_them(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "odd.tflite", [
        ConstOutput("embedding", np.zeros((1, 3, 3))),
        ConstOutput("logits", np.zeros((1, 7))),
    ])
    with pytest.raises(DecoderError) as err:
        run(path)
    msg = str(err.value)
    assert "no decoder recognises" in msg
    assert "embedding [1, 3, 3] float32" in msg and "logits [1, 7] float32" in msg
    for kind in ("ssd", "blazeface", "yolov8", "yolov5", "classifier"):
        assert f"{kind}: expected" in msg


def test_explicit_kind_that_does_not_fit(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "cls.tflite", [ConstOutput("probs", np.zeros((1, 4)))])
    with pytest.raises(DecoderError, match=r"decoder 'ssd' does not fit .*probs \[1, 4\]"):
        run(path, "ssd")
    with pytest.raises(DecoderError, match="unknown decoder kind 'mobilenet'"):
        run(path, "mobilenet")
