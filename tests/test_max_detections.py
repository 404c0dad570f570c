"""model.max_detections: a result carries at most that many detections, the best ones, and
says how many there were; the largest result there can be still fits one protocol line.

Real .tflite models from tests/tflite_builder.py hold far more detections than the cap;
they run through the real interpreter, decoder and result message, and the line is made by
the hub's own encoder.
"""

from __future__ import annotations

import base64
import inspect
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.tflite_builder import ConstOutput, constant_model, mean_rgb_model
from wattgate.config import MAX_RESULT_DETECTIONS, Config, ConfigError, parse_config
from wattgate.daemon.hub import MAX_LINE, encode, line_within
from wattgate.daemon.pipeline import Counters, Inferred, Job, Message
from wattgate.drivers.camera import Frame
from wattgate.drivers.decoders import (
    MAX_DETECTIONS,
    MAX_LABEL_BYTES,
    LabelsError,
    load_labels,
)
from wattgate.drivers.inference import Model, ModelError
from wattgate.policies.gating import GateVerdict

SIZE = (64, 64)  # a square input and square frames: no letterbox padding
FRAME = np.full((128, 128, 3), 90, np.uint8)
VERDICT = GateVerdict(True, "motion", 0.5, True, ((0, 0, 10, 10), (20, 20, 40, 40)))


def ssd_model(tmp_path: Path, scores: np.ndarray[Any, Any], classes: int = 3,
              labels: list[str] | None = None, **load: Any) -> Model:
    """An SSD postprocess model whose len(scores) detections all lie apart in a grid."""
    n = len(scores)
    side = int(np.ceil(np.sqrt(n)))
    cell = 1.0 / side
    rows, cols = np.divmod(np.arange(n), side)
    boxes = np.stack([rows * cell, cols * cell, (rows + 0.8) * cell, (cols + 0.8) * cell],
                     axis=1)
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput("detection_boxes", boxes[np.newaxis]),
        ConstOutput("detection_classes", (np.arange(n) % classes)[np.newaxis]),
        ConstOutput("detection_scores", scores[np.newaxis]),
        ConstOutput("num_detections", np.array([float(n)])),
    ], size=SIZE)
    labels_path = None
    if labels is not None:
        labels_path = tmp_path / "labels.txt"
        labels_path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    return Model.load(str(path), kind="ssd", labels=None if labels_path is None
                      else str(labels_path), score_threshold=0.1, **load)


def message(model: Model, frame_size: tuple[int, int] | None = None,
            verdict: GateVerdict = VERDICT) -> Message:
    """The result message the daemon publishes for one frame, built as the pipeline does."""
    frame = Frame(7, time.time(), time.monotonic(), FRAME)
    prepared = model.preparer().prepare(FRAME, frame_size=frame_size)
    inferred = Inferred(Counters(), Job(frame, verdict, prepared), model.invoke(prepared), 1,
                        time.monotonic())
    built = inferred.message()
    assert built is not None
    return built


def shuffled_scores(n: int, seed: int = 1) -> np.ndarray[Any, Any]:
    """n distinct scores in 0.2..0.99, in no order."""
    return np.random.default_rng(seed).permutation(np.linspace(0.2, 0.99, n)).astype(np.float32)


def test_a_crowded_ssd_result_has_the_best_cap_and_says_how_many(tmp_path: Path) -> None:
    scores = shuffled_scores(400)
    model = ssd_model(tmp_path, scores, max_detections=25)
    result = model.infer(FRAME)
    best = np.sort(scores)[::-1][:25]
    assert [d.score for d in result.detections] == pytest.approx(best.tolist())
    assert result.found == 400
    sent = message(model)
    assert len(sent["detections"]) == 25
    assert sent["detections_total"] == 400
    assert sent["detections"][0]["score"] == round(float(best[0]), 4)


def test_a_result_that_was_not_cut_does_not_say_so(tmp_path: Path) -> None:
    """"detections_total" is there only when detections were left out: a client reads its
    absence as "this is all of them"."""
    model = ssd_model(tmp_path, shuffled_scores(40), max_detections=40)
    result = model.infer(FRAME)
    assert len(result.detections) == result.found == 40
    assert "detections_total" not in message(model)


def test_boxes_in_the_letterbox_padding_are_not_counted(tmp_path: Path) -> None:
    """A 64x32 frame letterboxed fills rows 8..24 of the 32x32 input: a box in the padding
    above it is dropped, and a result that was not cut must not claim it as left out."""
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput("detection_boxes", np.array([[[0.0, 0.2, 0.2, 0.6], [0.4, 0.2, 0.6, 0.6]]])),
        ConstOutput("detection_classes", np.array([[0.0, 1.0]])),
        ConstOutput("detection_scores", np.array([[0.9, 0.8]])),
        ConstOutput("num_detections", np.array([2.0])),
    ], size=(32, 32))
    model = Model.load(str(path), kind="ssd", max_detections=5, resize="letterbox")
    result = model.infer(np.zeros((32, 64, 3), np.uint8))
    assert [d.label for d in result.detections] == ["1"] and result.found == 1


def test_a_crowded_yolov8_result_is_cut_after_suppression(tmp_path: Path) -> None:
    """450 objects in a grid, each seen twice (a shifted copy with a lower score): NMS keeps
    450, the cap keeps the best 30, and the count is of what NMS kept."""
    cols, rows_, n = 25, 18, 450
    r, c = np.divmod(np.arange(n), cols)
    cw, ch = 1.0 / cols, 1.0 / rows_
    best = shuffled_scores(n, seed=2)
    out = np.zeros((1, 4 + 2, 2 * n), np.float32)
    for copy, (shift, drop) in enumerate(((0.0, 0.0), (0.05, 0.1))):
        cols_of = slice(copy * n, (copy + 1) * n)
        out[0, 0, cols_of] = (c + 0.5 + shift) * cw
        out[0, 1, cols_of] = (r + 0.5) * ch
        out[0, 2, cols_of] = 0.6 * cw
        out[0, 3, cols_of] = 0.6 * ch
        out[0, 4, cols_of] = best - drop
    path = constant_model(tmp_path / "yolo.tflite", [ConstOutput("Identity", out)], size=SIZE)
    model = Model.load(str(path), kind="yolov8", score_threshold=0.05, max_detections=30)
    result = model.infer(FRAME)
    assert result.found == n
    assert [d.score for d in result.detections] == pytest.approx(
        np.sort(best)[::-1][:30].tolist())


def test_a_classifier_keeps_its_top_five_within_the_cap(tmp_path: Path) -> None:
    path = mean_rgb_model(tmp_path / "rgb.tflite", bias=0.5)
    model = Model.load(str(path), kind="classifier", score_threshold=0.0, max_detections=2)
    result = model.infer(FRAME)
    assert len(result.detections) == 2 and result.found == 3


def test_the_largest_result_fits_one_line(tmp_path: Path) -> None:
    """The cap at its highest, every label as long as a label may be once escaped for JSON
    (quotes and control characters take two and six bytes), scores as long as a float32
    prints, boxes in a frame 2**31 - 1 pixels wide (OpenCV's largest): one line, nothing
    omitted, with room to spare for the motion boxes."""
    labels = [f"{i:02d}" + '"' * 19 + "\x01" * 4 for i in range(3)]  # 2 + 38 + 24 bytes
    assert all(len(json.dumps(label, ensure_ascii=False).encode()) - 2 == MAX_LABEL_BYTES
               for label in labels), labels
    scores = np.full(MAX_RESULT_DETECTIONS + 50, 3.0e38, np.float32)
    model = ssd_model(tmp_path, scores, labels=labels, max_detections=MAX_RESULT_DETECTIONS)
    huge = 2**31 - 1
    sent = message(model, frame_size=(huge, huge))
    assert len(sent["detections"]) == MAX_RESULT_DETECTIONS
    assert sent["detections_total"] == MAX_RESULT_DETECTIONS + 50
    assert max(max(d["box"]) for d in sent["detections"]) > 2e9
    line = encode(sent)
    assert len(line) <= MAX_LINE - 12 * 1024, len(line)
    assert line_within(sent) == line
    decoded = json.loads(line)
    assert "omitted" not in decoded and len(decoded["detections"]) == MAX_RESULT_DETECTIONS
    assert {d["label"] for d in decoded["detections"]} == set(labels)


def test_a_label_longer_than_a_result_may_carry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("person\n" + "x" * MAX_LABEL_BYTES + "\n", encoding="utf-8")
    assert load_labels(path)[1] == "x" * MAX_LABEL_BYTES
    # 33 quotes are 66 bytes in a result line
    path.write_text("person\ncar\n" + '"' * (MAX_LABEL_BYTES // 2 + 1) + "\n", encoding="utf-8")
    with pytest.raises(LabelsError, match=rf"labels file {path}: line 3 is 66 bytes"):
        load_labels(path)
    model = tmp_path / "ssd.tflite"
    constant_model(model, [
        ConstOutput("detection_boxes", np.zeros((1, 2, 4))),
        ConstOutput("detection_classes", np.zeros((1, 2))),
        ConstOutput("detection_scores", np.zeros((1, 2))),
        ConstOutput("num_detections", np.array([0.0])),
    ], size=SIZE)
    with pytest.raises(ModelError, match=r"line 3 is 66 bytes"):
        Model.load(str(model), labels=str(path))


@pytest.mark.parametrize("value", [0, -1, MAX_RESULT_DETECTIONS + 1, 1.5, "300"])
def test_max_detections_out_of_range_names_the_key(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"max_detections": value}})
    assert any(p.startswith(f"model.max_detections: got {value!r}")
               for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("value", [1, MAX_RESULT_DETECTIONS])
def test_max_detections_within_range(value: int) -> None:
    assert parse_config({"model": {"max_detections": value}}).model.max_detections == value


def test_the_defaults_agree() -> None:
    """The driver's default is what a daemon gets from a config without the key."""
    assert Config().model.max_detections == MAX_DETECTIONS
    default = inspect.signature(Model.load).parameters["max_detections"].default
    assert default == MAX_DETECTIONS


def test_a_client_image_infer_reply_says_when_its_detections_were_cut(
    tmp_path: Path, start_daemon: Any
) -> None:
    """The infer command built its own list of detections: a reply cut at max_detections
    could not say so, unlike the same result from a camera frame."""
    ssd_model(tmp_path, np.linspace(0.6, 0.99, 400).astype(np.float32))
    daemon = start_daemon(model={"path": str(tmp_path / "ssd.tflite"), "kind": "ssd"})
    with daemon.connect() as client:
        reply = client.request("infer", image=base64.b64encode(
            cv2.imencode(".png", FRAME)[1].tobytes()).decode())
    assert reply["class"] == "reply", reply
    assert len(reply["detections"]) == MAX_DETECTIONS
    assert reply["detections_total"] == 400


def test_the_daemon_keeps_model_max_detections(tmp_path: Path, start_daemon: Any) -> None:
    """The key was read, checked and then not passed to the model: the daemon kept 100."""
    ssd_model(tmp_path, np.linspace(0.6, 0.99, 400).astype(np.float32))
    daemon = start_daemon(model={"path": str(tmp_path / "ssd.tflite"), "kind": "ssd",
                                 "max_detections": 25})
    with daemon.connect() as client:
        reply = client.request("infer", image=base64.b64encode(
            cv2.imencode(".png", FRAME)[1].tobytes()).decode())
    assert len(reply["detections"]) == 25 and reply["detections_total"] == 400, reply
