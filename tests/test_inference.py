"""Model.load / Model.infer with real TFLite files: the shipped BlazeFace models on real photos,
and models from tests/tflite_builder.py whose outputs reveal exactly what preprocessing fed in.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import cv2
import flatbuffers
import numpy as np
import pytest
import tflite
from tflite.BuiltinOperator import BuiltinOperator as Op
from tflite.BuiltinOptions import BuiltinOptions

from tests.tflite_builder import (
    _TENSOR_TYPES,
    ConstOutput,
    GraphBuilder,
    _int_vector,
    _reducer_options,
    constant_model,
    mean_rgb_model,
)
from wattgate.config import ModelResize
from wattgate.drivers import runtime
from wattgate.drivers.inference import RESIZES, Model, ModelError, default_model_path

REPO = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(str(__import__("skimage").__file__)).parent / "data"

# Reference face boxes (x0, y0, x1, y1) in the 512x512 skimage photos, from OpenCV's bundled
# Haar cascades: haarcascade_frontalface_default on astronaut.png; haarcascade_profileface on
# the mirrored camera.png (the cameraman is in profile), mapped back. Checked by eye.
FACES = {
    "astronaut.png": (177, 66, 272, 161),
    "camera.png": (179, 99, 278, 198),
}
BLAZEFACE_FILES = [
    "face_detection_short_range.tflite",
    "face_detection_full_range.tflite",
    "face_detection_full_range_sparse.tflite",
    "face_detection_back.tflite",
]


def photo(name: str) -> np.ndarray[Any, Any]:
    image = cv2.imread(str(SKIMAGE_DATA / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def on_face(box: Sequence[float], ref: Sequence[float], min_iou: float = 0.5) -> bool:
    """Centre inside the reference box and enough overlap with it."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return ref[0] < cx < ref[2] and ref[1] < cy < ref[3] and iou(box, ref) > min_iou


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def blazeface() -> Model:
    return Model.load(None)


# --------------------------------------------------------------------------- real BlazeFace


def test_default_model_is_blazeface_short_range(blazeface: Model) -> None:
    path = default_model_path()
    assert path.name == "face_detection_short_range.tflite" and path.is_file()
    assert blazeface.input_size == (128, 128)
    info = blazeface.info
    assert json.loads(json.dumps(info)) == info
    assert info["kind"] == "blazeface" and info["input"] == [128, 128, 3]
    assert info["input_dtype"] == "float32" and info["delegate"] is None
    assert info["runtime"] == runtime.RUNTIME_NAME
    assert info["name"] == "face_detection_short_range" and info["labels"] == 0


@pytest.mark.parametrize("name", sorted(FACES))
def test_blazeface_finds_the_one_face(blazeface: Model, name: str) -> None:
    result = blazeface.infer(photo(name))
    assert len(result.detections) == 1
    face = result.detections[0]
    assert face.label == "face" and face.score > 0.6
    assert on_face(face.box, FACES[name])
    assert 0 < result.invoke_ms <= result.total_ms


def test_blazeface_finds_no_face_in_coffee(blazeface: Model) -> None:
    assert blazeface.infer(photo("coffee.png")).detections == []


@pytest.mark.parametrize("file", BLAZEFACE_FILES[1:])
def test_other_blazeface_variants_use_their_own_anchors(file: str) -> None:
    """Full range (192 px, 2304 anchors) and back camera (256 px) load by auto-detection."""
    model = Model.load(str(default_model_path().with_name(file)))
    assert model.info["kind"] == "blazeface"
    for name, ref in FACES.items():
        dets = model.infer(photo(name)).detections
        # The Haar reference box is looser than BlazeFace's on the profile: IoU 0.4 here.
        assert len(dets) == 1 and on_face(dets[0].box, ref, 0.4), (name, dets)


def test_letterbox_of_a_non_square_frame(blazeface: Model) -> None:
    """The astronaut cropped to 512x300 and 300x512: boxes still land on the face."""
    image = photo("astronaut.png")
    wide = np.ascontiguousarray(image[0:300])
    tall = np.ascontiguousarray(image[:, 50:350])
    (face,) = blazeface.infer(wide).detections
    assert iou(face.box, FACES["astronaut.png"]) > 0.5
    (face,) = blazeface.infer(tall).detections
    x0, y0, x1, y1 = FACES["astronaut.png"]
    assert iou(face.box, (x0 - 50, y0, x1 - 50, y1)) > 0.5


# --------------------------------------------------------------------------- preprocessing


def solid(width: int, height: int, bgr: tuple[int, int, int]) -> np.ndarray[Any, Any]:
    return np.full((height, width, 3), bgr, np.uint8)


def scores(model: Model, frame: np.ndarray[Any, Any]) -> dict[str, float]:
    return {d.label: d.score for d in model.infer(frame).detections}


@pytest.fixture
def rgb_labels(tmp_path: Path) -> str:
    path = tmp_path / "rgb.txt"
    path.write_text("red\ngreen\nblue\n")
    return str(path)


def test_float_input_is_rgb_in_minus_one_to_one(tmp_path: Path, rgb_labels: str) -> None:
    # output = mean(channel) x 0.5 + 0.5: maps [-1, 1] back to [0, 1].
    path = mean_rgb_model(tmp_path / "f.tflite", input_dtype=np.float32, gain=0.5, bias=0.5)
    model = Model.load(str(path), kind="classifier", labels=rgb_labels, score_threshold=0.0)
    assert model.info["labels"] == 3
    got = scores(model, solid(32, 32, (0, 128, 255)))  # BGR: pure red, half green
    assert got["red"] == pytest.approx(1.0, abs=1e-6)
    assert got["green"] == pytest.approx((128 / 127.5 - 1) * 0.5 + 0.5, abs=1e-6)
    assert got["blue"] == pytest.approx(0.0, abs=1e-6)
    # A classifier is trained on stretched images: a 64x32 frame fills the 32x32 input.
    assert model.info["resize"] == "stretch"
    got = scores(model, solid(64, 32, (0, 0, 255)))
    assert got["red"] == pytest.approx(1.0, abs=1e-6)
    # Letterboxed on request, it fills half of it; the black padding reads as -1.
    model = Model.load(str(path), kind="classifier", labels=rgb_labels, score_threshold=0.0,
                       resize="letterbox")
    got = scores(model, solid(64, 32, (0, 0, 255)))
    assert got["red"] == pytest.approx(0.5, abs=1e-6)
    assert got["green"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dtype, quant", [
    (np.uint8, (1 / 255, 0)),      # [0, 1] calibration: the raw pixel
    (np.int8, (1 / 255, -128)),    # [0, 1] calibration: pixel - 128
    (np.uint8, (1 / 127.5, 128)),  # [-1, 1] calibration: still the raw pixel
    (np.int8, (1 / 127.5, 0)),     # [-1, 1] calibration: pixel - 128
], ids=["uint8", "int8", "uint8-symmetric", "int8-symmetric"])
def test_quantized_input_takes_pixels(tmp_path: Path, rgb_labels: str, dtype: Any,
                                      quant: tuple[float, int]) -> None:
    # output = real x 0.49 + 0.5 stays inside 0..1 for real inputs in [-1, 1].
    path = mean_rgb_model(tmp_path / "q.tflite", input_dtype=dtype, input_quant=quant,
                          gain=0.49, bias=0.5)
    model = Model.load(str(path), labels=rgb_labels, score_threshold=0.0)
    assert model.info["input_dtype"] == np.dtype(dtype).name
    scale, zero = quant
    q = np.array([255, 128, 0]) - (128 if dtype == np.int8 else 0)
    expected = scale * (q - zero) * 0.49 + 0.5
    got = scores(model, solid(32, 32, (0, 128, 255)))  # BGR: pure red, half green
    assert [got["red"], got["green"], got["blue"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_quantized_input_with_an_unusual_scale(tmp_path: Path, rgb_labels: str) -> None:
    """int8, scale 0.01, zero point 0 covers [-1.28, 1.27]: nearest to [-1, 1], so
    q = round(pixel x 2 / 255 / 0.01 - 100)."""
    path = mean_rgb_model(tmp_path / "q.tflite", input_dtype=np.int8, input_quant=(0.01, 0),
                          gain=0.49, bias=0.5)
    model = Model.load(str(path), labels=rgb_labels, score_threshold=0.0)
    q = np.clip(np.rint(np.array([255, 128, 0]) * 2 / 255 / 0.01 - 100), -128, 127)
    expected = 0.01 * q * 0.49 + 0.5
    got = scores(model, solid(32, 32, (0, 128, 255)))
    assert [got["red"], got["green"], got["blue"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_int8_input_with_unit_scale_takes_pixel_minus_128(tmp_path: Path,
                                                          rgb_labels: str) -> None:
    """int8, scale 1, zero point 0 covers [-128, 127]: a model trained on pixel - 128 (the
    int8 twin of a uint8 model with scale 1, zero point 0, which takes the raw pixel). Taken
    for [-1, 1], every input was rounded to -1, 0 or 1."""
    path = mean_rgb_model(tmp_path / "q.tflite", input_dtype=np.int8, input_quant=(1.0, 0),
                          gain=1 / 512, bias=0.5)
    model = Model.load(str(path), labels=rgb_labels, score_threshold=0.0)
    expected = (np.array([255, 128, 0]) - 128) / 512 + 0.5
    got = scores(model, solid(32, 32, (0, 128, 255)))
    assert [got["red"], got["green"], got["blue"]] == pytest.approx(expected.tolist(), abs=1e-5)


def yolo_model(tmp_path: Path, dtype: Any, quant: tuple[float, int] | None) -> Model:
    """A 32x32 model with a YOLOv8 output ([1, 4+3, 12], nothing above the threshold): only
    what its input is given is looked at."""
    path = constant_model(tmp_path / "yolo.tflite",
                          [ConstOutput("Identity", np.zeros((1, 7, 12)))],
                          input_dtype=dtype, input_quant=quant)
    return Model.load(str(path))


def bars_and_picture(tensor: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """A 64x32 frame in a 32x32 input: (the 8 rows of bars above and below, rows 8..24)."""
    return np.concatenate([tensor[0, :8], tensor[0, 24:]]), tensor[0, 8:24]


@pytest.mark.parametrize("dtype, quant, grey, picture", [
    (np.float32, None, 114 / 255, 200 / 255),   # [0, 1], as Ultralytics feeds it
    (np.uint8, (1 / 255, 0), 114, 200),         # the pixel as it is
    (np.int8, (1 / 255, -128), 114 - 128, 200 - 128),
    (np.int8, (1 / 127.5, 0), -14, 72),         # [-1, 1] calibration: 114 / 127.5 - 1
], ids=["float32", "uint8", "int8", "int8-symmetric"])
def test_a_yolo_letterbox_is_grey_114_in_the_input_s_own_terms(
        tmp_path: Path, dtype: Any, quant: tuple[float, int] | None, grey: float,
        picture: float) -> None:
    """Ultralytics trains and exports YOLO models with bars of grey 114 (ultralytics
    data/augment.py LetterBox: copyMakeBorder value=(114, 114, 114); YOLOv5's
    utils/augmentations.py letterbox color=(114, 114, 114)). Black bars were a dark edge
    the model never saw in training, and moved its scores near the frame's borders."""
    model = yolo_model(tmp_path, dtype, quant)
    assert model.info["kind"] == "yolov8"
    frame = solid(64, 32, (200, 200, 200))
    for preparer in (model.preparer(), model.preparer((64, 32), spares=1)):
        bars, inside = bars_and_picture(preparer.prepare(frame).tensor)
        assert bars.dtype == np.dtype(dtype)
        assert np.allclose(bars, grey, atol=1e-6), bars[0, 0]
        assert np.allclose(inside, picture, atol=1e-6), inside[0, 0]
        if quant is not None:  # the model reads 114 / 255 of its input range, to a step
            real = quant[0] * (float(bars[0, 0, 0]) - quant[1])
            assert real == pytest.approx(114 / 255 if quant[0] < 1 / 200 else 114 / 127.5 - 1,
                                         abs=quant[0])


def test_blazeface_and_a_letterboxed_ssd_have_black_bars(tmp_path: Path,
                                                       blazeface: Model) -> None:
    """MediaPipe's ImageToTensorCalculator with border_mode BORDER_ZERO pads the image with
    0 (warpPerspective BORDER_CONSTANT) before convertTo maps it to the tensor's float range
    (image_to_tensor_converter_opencv.cc): black reads as -1. An SSD letterboxed on request
    gets the same bars."""
    ssd = two_box_ssd(tmp_path, np.zeros((1, 2, 4), np.float32), resize="letterbox")
    bars, _ = bars_and_picture(ssd.preparer().prepare(solid(64, 32, (200, 200, 200))).tensor)
    assert np.all(bars == -1.0)
    tensor = blazeface.preparer().prepare(solid(256, 128, (200, 200, 200))).tensor
    assert np.all(tensor[0, :32] == -1.0) and np.all(tensor[0, 96:] == -1.0)


# --------------------------------------------------------------------------- classifier scores

#: RGB frames for mean_rgb_model(gain=2): logits 2 x (pixel / 127.5 - 1), inside 0..1 for the
#: first (0.4, 0.2, 0.008), outside it for the second (2, -2, 0.008).
IN_RANGE = (153, 140, 128)
OUT_OF_RANGE = (255, 0, 128)


def logits(rgb: tuple[int, int, int]) -> np.ndarray[Any, Any]:
    return 2.0 * (np.array(rgb, np.float64) / 127.5 - 1.0)


def softmax(x: np.ndarray[Any, Any]) -> list[float]:
    e = np.exp(x - x.max())
    return list(e / e.sum())


def classify(model: Model, rgb: tuple[int, int, int]) -> list[float]:
    """The published scores of red, green and blue for a frame of colour rgb."""
    got = scores(model, solid(32, 32, (rgb[2], rgb[1], rgb[0])))
    return [got["red"], got["green"], got["blue"]]


def rgb_classifier(tmp_path: Path, labels: str, fully_connected: bool = False,
                   softmax: bool = False) -> Model:
    path = mean_rgb_model(tmp_path / "cls.tflite", gain=2.0, fully_connected=fully_connected,
                          softmax=softmax)
    return Model.load(str(path), kind="classifier", labels=labels, score_threshold=0.0)


def test_a_head_that_ends_in_a_fully_connected_layer_gives_logits_on_every_frame(
        tmp_path: Path, rgb_labels: str) -> None:
    """A classifier exported without its softmax ends in FULLY_CONNECTED: its outputs are
    logits, also on a frame where they happen to lie within 0..1. Decided per frame, such a
    frame had its logits published as probabilities and the scores jumped."""
    model = rgb_classifier(tmp_path, rgb_labels, fully_connected=True)
    for rgb in (IN_RANGE, OUT_OF_RANGE, IN_RANGE):
        assert classify(model, rgb) == pytest.approx(softmax(logits(rgb)), abs=1e-5), rgb


def test_logits_seen_once_are_logits_on_every_frame_after(tmp_path: Path,
                                                          rgb_labels: str) -> None:
    """A graph that does not say (it ends in ADD): its first frames decide. Scores within
    0..1 pass as they are until a frame shows one outside it, which no probability is;
    from then on every frame gets the softmax, in range or not."""
    model = rgb_classifier(tmp_path, rgb_labels)
    assert classify(model, IN_RANGE) == pytest.approx(list(logits(IN_RANGE)), abs=1e-5)
    assert classify(model, OUT_OF_RANGE) == pytest.approx(softmax(logits(OUT_OF_RANGE)),
                                                          abs=1e-5)
    assert classify(model, IN_RANGE) == pytest.approx(softmax(logits(IN_RANGE)), abs=1e-5)


def test_a_classifier_that_ends_in_softmax_is_published_as_it_is(tmp_path: Path,
                                                                rgb_labels: str) -> None:
    model = rgb_classifier(tmp_path, rgb_labels, fully_connected=True, softmax=True)
    for rgb in (IN_RANGE, OUT_OF_RANGE):
        assert classify(model, rgb) == pytest.approx(softmax(logits(rgb)), abs=1e-5), rgb


# --------------------------------------------------------------------------- box mapping


def two_box_ssd(tmp_path: Path, boxes: np.ndarray[Any, Any], resize: str = "auto") -> Model:
    """A 32x32 SSD whose two detections are classes 0 and 1 (0.9, 0.8) at `boxes`."""
    path = constant_model(tmp_path / "ssd.tflite", [
        ConstOutput("detection_boxes", boxes),
        ConstOutput("detection_classes", np.array([[0.0, 1.0]])),
        ConstOutput("detection_scores", np.array([[0.9, 0.8]])),
        ConstOutput("num_detections", np.array([2.0])),
    ], size=(32, 32))
    return Model.load(str(path), resize=resize)


def test_boxes_map_back_through_the_letterbox(tmp_path: Path) -> None:
    boxes = np.array([[[0.25, 0.5, 0.75, 1.0], [0.3, 0.125, 0.5, 0.375]]], np.float32)
    model = two_box_ssd(tmp_path, boxes, resize="letterbox")
    assert model.info["kind"] == "ssd"
    # 64x32 frame: scale 0.5, 8 px of padding above and below.
    a, b = model.infer(solid(64, 32, (9, 9, 9))).detections
    assert a.label == "0" and np.allclose(a.box, (32, 0, 64, 32))
    assert b.label == "1" and np.allclose(b.box, (8, 3.2, 24, 16), atol=1e-4)
    # A 32x64 frame next: the geometry follows the frame (8 px of padding left and right).
    a, _ = model.infer(solid(32, 64, (9, 9, 9))).detections
    assert np.allclose(a.box, (16, 16, 32, 48))


def test_boxes_of_a_thin_frame_map_back_by_the_rows_it_was_given(tmp_path: Path) -> None:
    """A 256x12 line-scan strip in a 32x32 input: 1.5 rows at scale 0.125, rounded to 2
    (rows 15 and 16 of the input). A box on the input's row 16 is the strip's lower half,
    rows 6..12; mapped back by the scale (1 row = 8 frame rows) it came out as 8..12."""
    boxes = np.array([[[16 / 32, 0.25, 17 / 32, 0.75], [15 / 32, 0.0, 16 / 32, 1.0]]],
                     np.float32)
    model = two_box_ssd(tmp_path, boxes, resize="letterbox")
    lower, upper = model.infer(solid(256, 12, (9, 9, 9))).detections
    assert np.allclose(lower.box, (64, 6, 192, 12)), lower.box
    assert np.allclose(upper.box, (0, 0, 256, 6)), upper.box
    # the same strip standing up: (xmin, ymin) and (xmax, ymax) swap roles
    boxes = np.array([[[0.25, 16 / 32, 0.75, 17 / 32], [0.0, 15 / 32, 1.0, 16 / 32]]],
                     np.float32)
    (tmp_path / "tall").mkdir()
    tall = two_box_ssd(tmp_path / "tall", boxes, resize="letterbox")
    right, left = tall.infer(solid(12, 256, (9, 9, 9))).detections
    assert np.allclose(right.box, (6, 64, 12, 192)), right.box
    assert np.allclose(left.box, (0, 0, 6, 256)), left.box


def test_infer_rejects_a_frame_that_is_not_bgr(blazeface: Model) -> None:
    with pytest.raises(ValueError, match=r"BGR uint8 frame"):
        blazeface.infer(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"BGR uint8 frame"):
        blazeface.infer(np.zeros((64, 64, 3), np.float32))


def test_prepared_elsewhere_runs_as_infer_does(blazeface: Model) -> None:
    """The pipeline prepares frames on its capture thread and runs them on the inference
    thread: each kept tensor is its own, and the answer is what infer gives."""
    preparer = blazeface.preparer()
    astronaut = preparer.prepare(photo("astronaut.png"))
    coffee = preparer.prepare(photo("coffee.png"))  # must not overwrite the first tensor
    assert astronaut.tensor is not coffee.tensor
    (face,) = blazeface.run(astronaut).detections
    assert face.box == blazeface.infer(photo("astronaut.png")).detections[0].box
    assert on_face(face.box, FACES["astronaut.png"])
    assert blazeface.run(coffee).detections == []


def test_a_pipeline_reuses_its_input_tensors(blazeface: Model) -> None:
    """Once the interpreter has copied a tensor it goes back to its preparer, so a pipeline
    allocates no input tensor per frame; one still in flight is never handed out twice."""
    preparer = blazeface.preparer((512, 512), spares=2)
    first = preparer.prepare(photo("astronaut.png"))
    second = preparer.prepare(photo("coffee.png"))
    assert first.tensor is not second.tensor
    blazeface.run(first)
    third = preparer.prepare(photo("camera.png"))
    assert third.tensor is first.tensor and third.tensor is not second.tensor
    assert blazeface.run(second).detections == []


def test_a_frame_prepared_for_another_model_is_refused(blazeface: Model) -> None:
    other = Model.load(None)
    with pytest.raises(ValueError, match=r"prepared for model"):
        other.run(blazeface.preparer().prepare(photo("astronaut.png")))


# --------------------------------------------------------------------------- failures


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelError, match=r"nope\.tflite: not found"):
        Model.load(str(missing))


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", b"\x00" * 64])
def test_file_that_is_not_tflite(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=r"model\.tflite: not a TFLite flatbuffer"):
        Model.load(str(path))


@pytest.mark.parametrize("keep", [64, 4096, 100_000, -16])
def test_truncated_tflite_is_an_error_not_a_crash(tmp_path: Path, keep: int) -> None:
    """The runtime segfaults on a cut-off flatbuffer; loading must report it instead. Run in a
    child process so a regression fails this test rather than killing the test session."""
    path = tmp_path / "cut.tflite"
    path.write_bytes(default_model_path().read_bytes()[:keep])
    code = textwrap.dedent(f"""
        from wattgate.drivers.inference import Model, ModelError
        try:
            Model.load({str(path)!r})
        except ModelError as exc:
            print(exc)
    """)
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert "cut.tflite: damaged or truncated flatbuffer" in child.stdout


def test_outputs_no_decoder_recognises(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "embed.tflite",
                          [ConstOutput("embedding", np.zeros((1, 4, 4, 8)))])
    with pytest.raises(ModelError, match=r"embed\.tflite: no decoder recognises .*embedding"):
        Model.load(str(path))


class _SignatureBuilder(GraphBuilder):
    """A GraphBuilder that also writes shape signatures, as the converter does for a model
    exported with dynamic dimensions (-1) in them."""

    def __init__(self, signatures: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.signatures = signatures

    def _tensor(self, b: flatbuffers.Builder, t: Any) -> int:  # type: ignore[override]
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.shape)
        signature = self.signatures.get(t.name)
        sig = _int_vector(b, signature) if signature is not None else None
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        if sig is not None:
            tflite.TensorAddShapeSignature(b, sig)
        tflite.TensorAddType(b, _TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, t.buffer)
        tflite.TensorAddName(b, name)
        return int(tflite.TensorEnd(b))


def mean_model(path: Path, shape: tuple[int, int, int, int],
               signature: tuple[int, ...] | None = None) -> Path:
    """A classifier over `shape`: output [batch, 3], the mean of each channel."""
    g = _SignatureBuilder({"input": signature} if signature is not None else {})
    x = g.tensor("input", shape, np.float32)
    g.inputs.append(x)
    mean = g.tensor("probabilities", (shape[0], 3), np.float32)
    g.op(Op.MEAN, [x, g.const("axes", [1, 2], np.int32)], [mean],
         BuiltinOptions.ReducerOptions, _reducer_options(False))
    g.outputs.append(mean)
    return g.write(path)


def test_a_model_with_a_dynamic_input_size_is_refused(tmp_path: Path) -> None:
    """Exported with dynamic height and width, a model reports [1, 1, 1, 3] until resized:
    it loaded and ran every frame shrunk to one pixel."""
    path = mean_model(tmp_path / "dynamic.tflite", (1, 1, 1, 3), (1, -1, -1, 3))
    with pytest.raises(ModelError, match=r"dynamic\.tflite: input input has a dynamic size "
                       r"\[1, -1, -1, 3\]"):
        Model.load(str(path), kind="classifier")


def test_a_dynamic_batch_is_run_as_one_image(tmp_path: Path) -> None:
    path = mean_model(tmp_path / "batch.tflite", (1, 8, 8, 3), (-1, 8, 8, 3))
    model = Model.load(str(path), kind="classifier", score_threshold=0.0)
    assert model.info["input"] == [8, 8, 3]
    model.infer(np.full((16, 16, 3), 255, np.uint8))


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 0, 0, 3), (0, 32, 32, 3)])
def test_an_input_that_is_not_one_image_is_refused_at_load(
    tmp_path: Path, shape: tuple[int, int, int, int]
) -> None:
    """A batch of 2 was refused only by the decoder, with a message about its outputs; a
    0x0 input loaded and failed at the first frame inside OpenCV."""
    path = mean_model(tmp_path / "odd.tflite", shape)
    with pytest.raises(ModelError, match=r"odd\.tflite: expected one image input "
                       r"\[1, H, W, 3\], got input \[" + ", ".join(map(str, shape))):
        Model.load(str(path), kind="classifier")


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"labels file .*nolabels\.txt"):
        Model.load(None, labels=str(tmp_path / "nolabels.txt"))


def test_missing_delegate_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wattgate.inference"):
        model = Model.load(None, delegate="/nonexistent/libfoo.so",
                           delegate_options={"device": "usb"})
    assert model.info["delegate"] is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("/nonexistent/libfoo.so" in r.getMessage() and "CPU" in r.getMessage()
               for r in warnings)
    (face,) = model.infer(photo("astronaut.png")).detections
    assert iou(face.box, FACES["astronaut.png"]) > 0.5


def test_runtime_missing_names_both_packages() -> None:
    """With neither runtime importable, the module imports (RuntimeMissing is caught by
    name) and its first use fails with a message naming both."""
    code = textwrap.dedent("""
        import importlib.abc, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime"):
                    raise ImportError("hidden: " + name)
                return None

        sys.meta_path.insert(0, Hide())
        import wattgate.drivers.runtime
        try:
            wattgate.drivers.runtime.Interpreter
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.startswith("RuntimeMissing")
    assert "ai-edge-litert" in out and "tflite-runtime" in out


def test_runtime_in_use_is_named() -> None:
    assert runtime.RUNTIME_NAME in ("ai-edge-litert", "tflite-runtime")
    assert callable(runtime.Interpreter) and callable(runtime.load_delegate)


# --------------------------------------------------------------------------- odd outputs


def cast_model(path: Path, values: Any, dtype: Any) -> Path:
    """A model whose one output holds `values` CAST to an integer dtype: an integer output
    with no quantization parameters at all, as a hand-edited or badly exported model has."""
    g = GraphBuilder()
    x = g.tensor("input", (1, 32, 32, 3), np.float32)
    g.inputs.append(x)
    zeroed = g.tensor("zeroed", (1, 32, 32, 3), np.float32)
    g.op(Op.MUL, [x, g.const("zero", [0.0])], [zeroed])
    zero = g.tensor("zero_scalar", (1,), np.float32)
    g.op(Op.MEAN, [zeroed, g.const("axes", [1, 2, 3], np.int32)], [zero],
         BuiltinOptions.ReducerOptions, _reducer_options(False))
    const = np.asarray(values, np.float32)
    summed = g.tensor("summed", const.shape, np.float32)
    g.op(Op.ADD, [g.const("values", const), zero], [summed])
    out = g.tensor("probabilities", const.shape, dtype)
    g.op(Op.CAST, [summed], [out])
    g.outputs.append(out)
    return g.write(path)


@pytest.mark.parametrize("quant", [None, (0.0, 128), (-0.01, 0), (math.nan, 0)],
                         ids=["no-quantization", "zero-scale", "negative-scale", "nan-scale"])
def test_an_8_bit_output_without_a_usable_scale_is_refused(tmp_path: Path,
                                                           quant: Any) -> None:
    """A uint8 output with no usable scale went through as raw integers: a classifier's
    [10, 200, 30] came out as class 1 at probability 1.0 (a softmax of the raw values)."""
    if quant is None:
        path = cast_model(tmp_path / "odd.tflite", [[10.0, 200.0, 30.0]], np.uint8)
    else:
        path = constant_model(tmp_path / "odd.tflite", [
            ConstOutput("probabilities", [[0.1, 0.8, 0.1]], np.uint8, quant)])
    with pytest.raises(ModelError, match=r"odd\.tflite: output probabilities \[1, 3\] uint8 "
                       r"has no usable quantization scale"):
        Model.load(str(path), kind="classifier", score_threshold=0.0)


def test_a_wide_integer_output_needs_no_scale(tmp_path: Path) -> None:
    """int32 outputs (class ids, counts) hold whole numbers as they are: still loaded."""
    path = cast_model(tmp_path / "ids.tflite", [[0.0, 1.0, 0.0]], np.int32)
    model = Model.load(str(path), kind="classifier", score_threshold=0.5)
    assert [d.label for d in model.infer(solid(32, 32, (0, 0, 0))).detections] == ["1"]


def test_an_ssd_is_stretched_as_it_is_trained_and_its_boxes_map_back_per_axis(
        tmp_path: Path) -> None:
    """The TF Object Detection API trains its SSDs on images resized to the input's height
    and width (fixed_shape_resizer). Letterboxed, a 16:9 frame filled only 56 % of a square
    input, every object a little more than half its trained size, bars above and below."""
    boxes = np.array([[[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.125, 0.25]]], np.float32)
    model = two_box_ssd(tmp_path, boxes)
    assert model.info["resize"] == "stretch"
    tensor = model.preparer().prepare(solid(64, 32, (200, 200, 200))).tensor
    assert np.allclose(tensor, 200 / 127.5 - 1.0)  # the picture fills the input: no bars
    a, b = model.infer(solid(64, 32, (9, 9, 9))).detections
    assert np.allclose(a.box, (32, 8, 64, 24))  # x by 64/32, y by 32/32
    assert np.allclose(b.box, (0, 0, 16, 4))
    # each axis its own scale, whatever the shape
    a, _ = model.infer(solid(320, 96, (9, 9, 9))).detections
    assert np.allclose(a.box, (160, 24, 320, 72))


@pytest.mark.parametrize("kind, resize, expected", [
    ("ssd", "auto", "stretch"),
    ("ssd", "letterbox", "letterbox"),
    ("yolov8", "auto", "letterbox"),
    ("yolov8", "stretch", "stretch"),
])
def test_resize_auto_follows_the_kind_and_an_explicit_one_wins(
        tmp_path: Path, kind: str, resize: str, expected: str) -> None:
    if kind == "ssd":
        model = two_box_ssd(tmp_path, np.zeros((1, 2, 4), np.float32), resize=resize)
    else:
        path = constant_model(tmp_path / "yolo.tflite",
                              [ConstOutput("Identity", np.zeros((1, 7, 12)))])
        model = Model.load(str(path), resize=resize)
    assert (model.info["kind"], model.info["resize"]) == (kind, expected)
    tensor = model.preparer().prepare(solid(64, 32, (200, 200, 200))).tensor
    bars, _ = bars_and_picture(tensor)
    assert np.all(bars == tensor[0, 16, 16]) == (expected == "stretch")


def test_blazeface_is_letterboxed(blazeface: Model) -> None:
    """MediaPipe fits the frame into BlazeFace's input keeping its aspect ratio."""
    assert blazeface.info["resize"] == "letterbox"


def test_the_resizes_config_takes_are_the_model_s() -> None:
    """config.toml's model.resize and what Model.load takes are one list."""
    assert get_args(ModelResize) == RESIZES


def test_an_unknown_resize_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = mean_rgb_model(tmp_path / "rgb.tflite")
    with pytest.raises(ModelError, match=r"rgb\.tflite: unknown resize 'squash'"):
        Model.load(str(path), kind="classifier", resize="squash")


def test_a_detection_inside_the_letterbox_padding_is_dropped(tmp_path: Path) -> None:
    """A 64x32 frame fills rows 8..24 of the 32x32 input. A box wholly in the black band
    above it mapped to a box of height 0 at the frame's top edge and was published."""
    boxes = np.array([[[0.05, 0.25, 0.2, 0.75],    # ymin..ymax 1.6..6.4 px: padding only
                       [0.2, 0.25, 0.5, 0.75]]], np.float32)  # reaches into the frame
    model = two_box_ssd(tmp_path, boxes, resize="letterbox")
    (det,) = model.infer(solid(64, 32, (9, 9, 9))).detections
    assert det.label == "1" and np.allclose(det.box, (16, 0, 48, 16))


@pytest.mark.parametrize("lines, warned", [
    (["cat", "dog", "bird"], False),
    (["cat", "dog"], True),  # class 2 would come out as "2"
    (["background", "cat", "dog", "bird"], True),  # every name one class off
])
def test_a_labels_file_that_does_not_fit_the_classes_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lines: list[str], warned: bool
) -> None:
    path = mean_rgb_model(tmp_path / "rgb.tflite")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="wattgate.inference"):
        Model.load(str(path), kind="classifier", labels=str(labels))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = f"labels file {labels} has {len(lines)} labels for the 3 classes of rgb.tflite"
    assert any(expected in m for m in messages) == warned, messages
