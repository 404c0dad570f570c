"""Pure decoders that turn a model's output tensors into detections.

No interpreter, no I/O except ``load_labels``: a decoder is built once from the tensor specs
(shapes, names, quantization) and then maps already-dequantized output arrays to
``Detection`` lists. Output layouts follow REFERENCE.md, "TFLite runtimes" -> "Output layouts".
Outputs are always matched by shape and name, never by position, because exporters disagree on
the order.

Boxes leave a decoder as (x0, y0, x1, y1) normalised to the model input, clipped to 0..1 and
sorted by score, highest first, at most ``max_detections`` of them (TFLite's SSD postprocess
op and ultralytics' ``max_det`` bound a result the same way): each result is one protocol
line of at most 64 KiB, and a crowded scene or a low threshold leaves hundreds after
suppression. The list says how many there were before that cut (``Detections.found``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "KINDS",
    "YOLO_KINDS",
    "DecoderError",
    "Detection",
    "Detections",
    "LabelsError",
    "TensorSpec",
    "dequantize",
    "load_labels",
    "make_decoder",
]

log = logging.getLogger("wattgate.inference")

FloatArray = npt.NDArray[np.float32]
Array = npt.NDArray[Any]
#: x0, y0, x1, y1 of the model input a picture fills, normalised; outside: a letterbox's bars
Area = tuple[float, float, float, float]
WHOLE: Area = (0.0, 0.0, 1.0, 1.0)

KINDS = ("auto", "blazeface", "ssd", "yolov8", "yolov5", "classifier")
#: The kinds of Ultralytics YOLO models, which share their input conventions.
YOLO_KINDS = frozenset({"yolov8", "yolov5"})

#: Candidates kept after the score threshold, before NMS: bounds NMS cost on noisy frames.
MAX_CANDIDATES = 1000
#: MediaPipe's face detection graphs suppress at IoU 0.3 (weighted NMS).
BLAZEFACE_IOU = 0.3
#: Ultralytics' default NMS IoU for YOLOv8.
YOLO_IOU = 0.45
CLASSIFIER_TOP_K = 5
#: Detections a result keeps unless told otherwise; config.py's model.max_detections default.
MAX_DETECTIONS = 100
#: Longest label, in bytes as a result line carries it (UTF-8, JSON-escaped: a quote takes
#: 2, a control character 6). With it one detection takes at most 168 bytes of a line:
#: {"label":"<64>","score":<22: a float32's longest>,"box":[<4 x 12: 2147483647.0>]} and a
#: comma, which is what bounds model.max_detections in config.py.
MAX_LABEL_BYTES = 64
#: Highest class id a labels file numbered by ids may name (ImageNet-21k has 21843 classes):
#: the list of labels is as long as the highest id, so a stray huge number is refused.
MAX_CLASS_ID = 99_999
#: A line of pycoral's numbered labels format, "<id> <name>" or "<id>:<name>" (Coral's
#: coco_labels.txt: "0  person", with gaps where COCO has no class).
_ID_LINE = re.compile(r"(\d+)[:\s]+(\S.*)")


@dataclass(frozen=True)
class Detection:
    """One result. ``box`` is (x0, y0, x1, y1): normalised in decoder output, pixels after
    ``Model.infer`` maps it back to the source frame."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class TensorSpec:
    """What the decoders need to know about one tensor, from ``get_*_details()``, and for an
    output the operator that computes its values (``inference.output_specs``), "" when the
    graph was not read."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int
    producer: str = ""

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> TensorSpec:
        scale, zero_point = details.get("quantization", (0.0, 0))
        return cls(
            name=str(details["name"]),
            index=int(details["index"]),
            shape=tuple(int(d) for d in details["shape"]),
            dtype=np.dtype(details["dtype"]),
            scale=float(scale),
            zero_point=int(zero_point),
        )

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"

    def describe(self) -> str:
        return f"{self.name or '?'} {list(self.shape)} {self.dtype.name}"


class Detections(list[Detection]):
    """Detections best first, and ``found``: how many there were before they were cut to
    max_detections (len(self) when none were), so a result can tell "nothing there" from
    "more than could be sent"."""

    def __init__(self, found: int) -> None:
        super().__init__()
        self.found = found


class DecoderError(ValueError):
    """The outputs do not fit the requested decoder; the message lists them."""


class LabelsError(ValueError):
    """A labels file cannot be read or is empty; the message names the file."""


class Decoder(Protocol):
    kind: str
    #: How many classes the output shapes say the model has; None when they do not say
    #: (an SSD's class ids are values, not a dimension).
    classes: int | None
    #: The labels its results carry, as hello's model.labels counts them (an SSD's
    #: without a labels file's background line).
    labels: Sequence[str] | None

    def decode(self, outputs: Sequence[Array], area: Area = WHOLE) -> Detections: ...


def dequantize(raw: Array, spec: TensorSpec) -> FloatArray:
    """real = scale x (q - zero_point) (REFERENCE.md, "Quantised tensors"); floats pass as is."""
    if spec.quantized:
        out = raw.astype(np.float32)
        out -= np.float32(spec.zero_point)
        out *= np.float32(spec.scale)
        return out
    return raw.astype(np.float32, copy=False)


def load_labels(path: str | PathLike[str]) -> list[str]:
    """Labels by class id: entry N names class N. Two formats, as pycoral reads them:
    one label a line (line N is class N; trailing blank lines are ignored), or, when every
    line that is not blank is "<id> <name>" or "<id>:<name>", the names by those ids, with
    ids the file skips named by their number (Coral's coco_labels.txt skips COCO's gaps:
    read line by line, "0  person" was the label and every class past a gap had the next
    one's name).

    A label longer than MAX_LABEL_BYTES (as a result line carries it) is refused, naming
    its line: a result of max_detections such labels would not fit a protocol line and
    would reach clients without its detections."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LabelsError(f"labels file {p}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise LabelsError(f"labels file {p}: not UTF-8 text ({exc.reason})") from exc
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise LabelsError(f"labels file {p}: no labels in it (expected one label a line)")
    matches = [_ID_LINE.fullmatch(line) for line in lines]
    numbered = all(m is not None or not line for m, line in zip(matches, lines))
    by_id: dict[int, str] = {}
    for number, (line, m) in enumerate(zip(lines, matches), 1):
        label = m.group(2) if numbered and m else line
        size = len(json.dumps(label, ensure_ascii=False).encode()) - 2
        if size > MAX_LABEL_BYTES:
            raise LabelsError(
                f"labels file {p}: line {number} is {size} bytes as a result carries it "
                f"(UTF-8, JSON-escaped); a label may take at most {MAX_LABEL_BYTES}"
            )
        if numbered and m:
            class_id = int(m.group(1))
            if class_id > MAX_CLASS_ID:
                raise LabelsError(f"labels file {p}: line {number} numbers class "
                                  f"{class_id}; class ids go up to {MAX_CLASS_ID}")
            by_id[class_id] = label
    if not numbered:
        return lines
    return [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]


# --------------------------------------------------------------------------- box helpers


def _cxcywh_to_xyxy(c: FloatArray) -> FloatArray:
    half = c[:, 2:4] * 0.5
    return np.concatenate([c[:, 0:2] - half, c[:, 0:2] + half], axis=1)


def _iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one xyxy box against many."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def _top_candidates(scores: FloatArray, threshold: float) -> npt.NDArray[np.intp]:
    """Indices above threshold, best first, at most MAX_CANDIDATES."""
    idx = np.flatnonzero(scores >= threshold)
    order = np.argsort(-scores[idx], kind="stable")[:MAX_CANDIDATES]
    result: npt.NDArray[np.intp] = idx[order]
    return result


def _nms(boxes: FloatArray, scores: FloatArray, iou: float) -> npt.NDArray[np.intp]:
    """Greedy hard NMS over candidates (already few); returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        top = int(order[0])
        keep.append(top)
        rest = order[1:]
        order = rest[_iou(boxes[top], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.intp)


def _weighted_nms(
    boxes: FloatArray, scores: FloatArray, iou: float
) -> tuple[FloatArray, FloatArray]:
    """MediaPipe-style weighted NMS: each cluster of boxes overlapping the best one above
    ``iou`` is replaced by their score-weighted mean box, keeping the best score."""
    order = np.argsort(-scores, kind="stable")
    out_boxes: list[FloatArray] = []
    out_scores: list[float] = []
    while order.size:
        overlap = _iou(boxes[order[0]], boxes[order]) > iou
        overlap[0] = True
        cluster = order[overlap]
        weights = scores[cluster]
        out_boxes.append((boxes[cluster] * weights[:, None]).sum(axis=0) / weights.sum())
        out_scores.append(float(scores[order[0]]))
        order = order[~overlap]
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    return np.stack(out_boxes).astype(np.float32), np.asarray(out_scores, np.float32)


def _detections(
    boxes: FloatArray, scores: FloatArray, label: Callable[[int], str], limit: int,
    area: Area,
) -> Detections:
    """Clip to ``area`` (the picture's part of the input, 0..1 without a letterbox's
    bars), drop boxes left with no area and scores that are not finite (a broken model's
    NaN would otherwise reach clients), sort by score descending, keep the best ``limit``.
    A box wholly in the bars goes before the cut: cut first, a score in the bars took the
    place of a real detection, and the result said one was found and gave none.
    ``label(i)`` names row i; it is asked only for the rows kept, so a crowded frame costs
    no label look-ups (nor Detection objects) for what is cut."""
    x0, y0, x1, y1 = area
    boxes = np.clip(boxes, np.array([x0, y0, x0, y0], np.float32),
                    np.array([x1, y1, x1, y1], np.float32))
    with np.errstate(invalid="ignore"):
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(scores)
    rows = np.flatnonzero(valid)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    result = Detections(len(rows))
    for i in rows[:limit].tolist():
        x0, y0, x1, y1 = boxes[i].tolist()
        result.append(Detection(label(i), float(scores[i]), (x0, y0, x1, y1)))
    return result


def _label_for(labels: Sequence[str] | None, class_id: int) -> str:
    if labels is not None and 0 <= class_id < len(labels):
        return labels[class_id]
    return str(class_id)


def _input_hw(spec: TensorSpec) -> tuple[int, int]:
    """(height, width) of an NHWC image input."""
    if len(spec.shape) != 4:
        raise DecoderError(f"input {spec.describe()}: expected an image [1, H, W, C]")
    return spec.shape[1], spec.shape[2]


def _listing(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(s.describe() for s in specs) or "none"


# --------------------------------------------------------------------------- BlazeFace

#: MediaPipe anchor layouts: (strides, anchors a cell per stride layer). Short range: strides
#: 8,16,16,16 with 2 anchors a layer (aspect 1 + interpolated scale) -> 896 at 128 px; full
#: range: stride 4, 1 anchor -> 2304 at 192 px; the "back" camera model: 16,32,32,32 at 256 px.
#: (REFERENCE.md, "Output layouts" -> BlazeFace.) The layout is picked by which one yields the
#: model's anchor count at its input size.
_BLAZE_LAYOUTS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((8, 16, 16, 16), 2),
    ((4,), 1),
    ((16, 32, 32, 32), 2),
)


def blazeface_anchors(
    width: int, height: int, strides: Sequence[int], per_layer: int
) -> FloatArray:
    """Anchor centres [N, 2] (x, y normalised). Consecutive equal strides share one grid whose
    cells hold ``per_layer`` anchors for each merged layer; anchor size is fixed at 1."""
    groups: list[tuple[int, int]] = []
    for s in strides:
        if groups and groups[-1][0] == s:
            groups[-1] = (s, groups[-1][1] + per_layer)
        else:
            groups.append((s, per_layer))
    parts = []
    for stride, per_cell in groups:
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(
            (np.arange(fh, dtype=np.float32) + 0.5) / fh,
            (np.arange(fw, dtype=np.float32) + 0.5) / fw,
            indexing="ij",
        )
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        parts.append(np.repeat(centres, per_cell, axis=0))
    anchors: FloatArray = np.concatenate(parts).astype(np.float32)
    return anchors


class BlazeFaceDecoder:
    """regressors [1,N,4+2K] (cx,cy,w,h,keypoints in input pixels around the anchor centre)
    and classificators [1,N,1] (logits)."""

    kind = "blazeface"

    def __init__(self, input_spec: TensorSpec, outputs: Sequence[TensorSpec],
                 labels: Sequence[str] | None, score_threshold: float,
                 max_detections: int) -> None:
        height, width = _input_hw(input_spec)
        shapes = {i: s.shape for i, s in enumerate(outputs)}
        reg = [i for i, sh in shapes.items() if len(sh) == 3 and sh[-1] >= 4 and sh[-1] % 2 == 0]
        cls = [i for i, sh in shapes.items() if len(sh) == 3 and sh[-1] == 1]
        if len(outputs) != 2 or len(reg) != 1 or len(cls) != 1 or \
                shapes[reg[0]][1] != shapes[cls[0]][1]:
            raise DecoderError("expected regressors [1, N, 16] and classificators [1, N, 1]")
        n = shapes[reg[0]][1]
        for strides, per_layer in _BLAZE_LAYOUTS:
            anchors = blazeface_anchors(width, height, strides, per_layer)
            if len(anchors) == n:
                break
        else:
            raise DecoderError(
                f"no BlazeFace anchor layout gives {n} anchors at {width}x{height} "
                "(expected 896 at 128x128 or 2304 at 192x192)"
            )
        self._reg, self._cls = reg[0], cls[0]
        self.anchors = anchors
        self._scale = np.array([width, height, width, height], np.float32)
        self._threshold = score_threshold
        self._limit = max_detections
        self.labels = labels
        self._label = labels[0] if labels else "face"
        self.classes: int | None = 1

    def decode(self, outputs: Sequence[Array], area: Area = WHOLE) -> Detections:
        logits = np.asarray(outputs[self._cls], np.float32).reshape(-1)
        # MediaPipe clips logits to +-100 before the sigmoid (score_clipping_thresh).
        clipped = np.clip(logits, -100.0, 100.0).astype(np.float64)  # exp(100) overflows f32
        scores = (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)
        idx = _top_candidates(scores.astype(np.float32), self._threshold)
        if idx.size == 0:
            return Detections(0)
        raw = np.asarray(outputs[self._reg], np.float32).reshape(len(logits), -1)[idx, :4]
        centre_wh = raw / self._scale
        centre_wh[:, 0:2] += self.anchors[idx]
        boxes, kept = _weighted_nms(_cxcywh_to_xyxy(centre_wh), scores[idx], BLAZEFACE_IOU)
        name = self._label
        return _detections(boxes, kept, lambda _: name, self._limit, area)


# --------------------------------------------------------------------------- SSD


def _ssd_role(name: str) -> str | None:
    """'scores' / 'classes' from a tensor name, or None when the name does not tell."""
    low = name.lower()
    if "score" in low:
        return "scores"
    if "class" in low:
        return "classes"
    # The TFLite_Detection_PostProcess op's own outputs: :1 classes, :2 scores.
    m = re.fullmatch(r".*postprocess:(\d)", low)
    if m:
        return {"1": "classes", "2": "scores"}.get(m.group(1))
    return None


#: First lines of labels files that name the background class: TensorFlow's SSD labelmap.txt
#: starts with "???", TF Object Detection label lists with "background".
_BACKGROUND_LABELS = ("???", "background")


def _without_background(labels: Sequence[str] | None) -> Sequence[str] | None:
    """The labels for TFLite_Detection_PostProcess class ids, which leave the background out
    (class 0 is the first real class): a labels file that names the background first is
    one line ahead of them, and every name came out one class off."""
    if labels and labels[0].lower() in _BACKGROUND_LABELS:
        return labels[1:]
    return labels


class SsdDecoder:
    """TFLite_Detection_PostProcess: boxes [1,N,4] (ymin,xmin,ymax,xmax), classes [1,N],
    scores [1,N], count [1], in any order."""

    kind = "ssd"

    def __init__(self, input_spec: TensorSpec, outputs: Sequence[TensorSpec],
                 labels: Sequence[str] | None, score_threshold: float,
                 max_detections: int) -> None:
        boxes = [i for i, s in enumerate(outputs) if len(s.shape) == 3 and s.shape[-1] == 4]
        count = [i for i, s in enumerate(outputs) if len(s.shape) <= 1 and math.prod(s.shape) == 1]
        if len(outputs) != 4 or len(boxes) != 1 or len(count) != 1:
            raise DecoderError(
                "expected 4 outputs: boxes [1, N, 4], classes [1, N], scores [1, N], count [1]"
            )
        n = outputs[boxes[0]].shape[1]
        # Not the count: with N = 1 (exported for one detection) its [1] is also [N].
        pair = [i for i, s in enumerate(outputs) if s.shape in ((1, n), (n,)) and i != count[0]]
        if len(pair) != 2:
            raise DecoderError(f"expected classes [1, {n}] and scores [1, {n}] beside boxes")
        roles = {i: _ssd_role(outputs[i].name) for i in pair}
        self._pair = pair
        self._scores: int | None = None
        self._classes: int | None = None
        if sorted(r or "" for r in roles.values()) == ["classes", "scores"]:
            self._scores = next(i for i in pair if roles[i] == "scores")
            self._classes = next(i for i in pair if roles[i] == "classes")
        elif list(roles.values()).count(None) == 1:
            known = next(i for i in pair if roles[i])
            other = next(i for i in pair if i != known)
            self._scores, self._classes = (known, other) if roles[known] == "scores" \
                else (other, known)
        # What the positions say, for frames whose values do not (pycoral's adapters/detect.py
        # get_objects): the count last is the op's own order (boxes, classes, scores, count),
        # otherwise EfficientDet-Lite's (scores, boxes, count, classes).
        first, second = sorted(pair)
        self._by_position = (second, first) if count[0] == len(outputs) - 1 else (first, second)
        self._boxes, self._count = boxes[0], count[0]
        self.classes: int | None = None
        self.labels = _without_background(labels)
        self._threshold = score_threshold
        self._limit = max_detections

    def _split(self, outputs: Sequence[Array], count: int) -> tuple[Array, Array]:
        """(scores, classes). Names decide when they can; otherwise the values of the
        `count` detections: class ids are whole numbers and scores are not. When both are
        whole, the positions: a sure detection's 1.0 beside class 0 tells nothing, and
        taking the larger maximum for the class ids read that 1.0 as one and the zeros as
        the scores, so the surest detection was lost."""
        if self._scores is not None and self._classes is not None:
            return outputs[self._scores], outputs[self._classes]
        a, b = (np.asarray(outputs[i], np.float32).reshape(-1)[:count] for i in self._pair)
        a_whole, b_whole = bool(np.all(a == np.round(a))), bool(np.all(b == np.round(b)))
        if a_whole != b_whole:
            return (b, a) if a_whole else (a, b)
        scores, classes = self._by_position
        return outputs[scores], outputs[classes]

    def decode(self, outputs: Sequence[Array], area: Area = WHOLE) -> Detections:
        boxes = np.asarray(outputs[self._boxes], np.float32).reshape(-1, 4)
        reported = float(np.asarray(outputs[self._count]).reshape(-1)[0])
        count = max(0, min(round(reported), len(boxes))) if math.isfinite(reported) else 0
        scores_raw, classes_raw = self._split(outputs, count)
        scores = np.asarray(scores_raw, np.float32).reshape(-1)[:count]
        raw = np.asarray(classes_raw, np.float64).reshape(-1)[:count]
        ids = np.rint(raw)
        with np.errstate(invalid="ignore"):  # NaN compares as not whole, without a word
            # A class id is a whole number from 0: NaN or a huge id cast to int made a
            # nonsense label, a fractional one means the outputs are not what they seem.
            whole = (raw == ids) & (ids >= 0) & (ids < 2**31)
        keep = (scores >= self._threshold) & whole
        xyxy = boxes[:count][keep][:, [1, 0, 3, 2]]
        kept_ids, labels = ids[keep], self.labels
        return _detections(xyxy, scores[keep], lambda i: _label_for(labels, int(kept_ids[i])),
                           self._limit, area)


# --------------------------------------------------------------------------- YOLO


#: Strides of a YOLO model's output grids: P3-P5, and P6 models' extra stride 64.
_YOLO_STRIDES = ((8, 16, 32), (8, 16, 32, 64))


def _yolo_cells(width: int, height: int) -> set[int]:
    """How many grid cells a YOLO model has at this input size, for each stride set."""
    return {sum(math.ceil(height / s) * math.ceil(width / s) for s in strides)
            for strides in _YOLO_STRIDES}


def _yolo_rows_first(shape: tuple[int, ...], cells: set[int]) -> bool | None:
    """Whether a YOLO output [1, A, B] has its boxes as rows ([1, N, 4+C] or YOLOv5's
    [1, N, 5+C]) rather than as columns ([1, 4+C, N]); None when that cannot be told.

    The side that is the grid cells (three times them for YOLOv5) is N. Which side is longer
    says nothing: many classes at a small input have more channels than cells (yolov8n-oiv7,
    4+601, has 525 cells at 160 px; COCO at 64 px, 4+80 and 84). When both sides are cells
    (square, [1, 84, 84]) it is Ultralytics' own export, columns; when neither is, the
    longer side is taken for N, and rows first are refused later for not being cells."""
    rows_fit = shape[1] in cells or shape[1] in {3 * c for c in cells}
    columns_fit = shape[2] in cells
    if rows_fit != columns_fit:
        return rows_fit
    if shape[1] == shape[2]:
        return False if columns_fit else None
    return shape[1] > shape[2]


class YoloV8Decoder:
    """One output of YOLO boxes without objectness, cx, cy, w, h then the class scores, as
    Ultralytics exports YOLOv8 and later (and YOLOv5u, which has YOLOv8's head):

    - [1, 4+C, N], Ultralytics' own export;
    - [1, N, 4+C], the same rows first (onnx2tf and other converters).
    Rows first it is told from YOLOv5's [1, N, 5+C] (``YoloV5Decoder``) by N: YOLOv8 has one
    box a grid cell, YOLOv5 three (anchors), over the grids of strides 8, 16, 32 (and 64).
    "yolov5" on this layout is refused, naming the kind that fits: decoded as YOLOv5, class
    0's score would be read as an objectness. "yolov8" on YOLOv5's layout decodes it as
    YOLOv5, with a warning: config.toml named no other kind for it before "yolov5"."""

    kind = "yolov8"
    #: An objectness after the box, and three boxes a grid cell: YOLOv5's layout.
    objectness = False
    layout = ("one output [1, 4+C, N] or, rows first, [1, N, 4+C] with N = the {cells} grid "
              "cells of a {size} input (YOLOv8: one box a cell, no objectness)")

    def __init__(self, input_spec: TensorSpec, outputs: Sequence[TensorSpec],
                 labels: Sequence[str] | None, score_threshold: float,
                 max_detections: int) -> None:
        height, width = _input_hw(input_spec)
        cells = _yolo_cells(width, height)
        expected = "expected " + self.layout.format(cells=sorted(cells),
                                                    size=f"{width}x{height}")
        shape = outputs[0].shape if len(outputs) == 1 else ()
        rows = _yolo_rows_first(shape, cells) \
            if len(shape) == 3 and shape[0] == 1 and min(shape[1:]) >= 5 else None
        if rows is None:
            raise DecoderError(expected)
        self._rows = rows
        v5 = self._rows and shape[1] in {3 * c for c in cells}
        if self._rows and not v5 and shape[1] not in cells:
            raise DecoderError(f"{expected}; rows first, N = {shape[1]} is neither the grid "
                               "cells (YOLOv8) nor 3 times them (YOLOv5)")
        if self.objectness and not v5:
            raise DecoderError(f'{expected}; {list(shape)} is YOLOv8\'s layout: '
                               'kind = "yolov8" (or "auto") decodes it')
        if v5 and not self.objectness:
            # What config.toml said to write for YOLOv5 before "yolov5" was a kind, and it
            # decoded right: an upgrade must not refuse the model. Decoded as YOLOv5.
            log.warning('kind = "yolov8" on YOLOv5\'s layout %s: decoded as YOLOv5; '
                        'kind = "yolov5" (or "auto") names it', list(shape))
            self.kind, self.objectness = YoloV5Decoder.kind, True
        self._first = 5 if v5 else 4  # first class score
        self.classes: int | None = (shape[2] if self._rows else shape[1]) - self._first
        self._pixels = np.array([width, height, width, height], np.float32)
        self.labels = labels
        self._threshold = score_threshold
        self._limit = max_detections

    def decode(self, outputs: Sequence[Array], area: Area = WHOLE) -> Detections:
        pred = np.asarray(outputs[0], np.float32)[0]
        if self._rows:
            pred = pred.T  # [4+C, N] as a view, no copy
        rows: npt.NDArray[np.intp] | None = None
        if self.objectness:
            # A score is at most its objectness: only rows past the threshold are scored.
            objectness = pred[4]
            rows = np.flatnonzero(objectness >= self._threshold)
            class_scores = pred[self._first:, rows] * objectness[rows]
        else:
            class_scores = pred[self._first:]
        scores = class_scores.max(axis=0)
        best = _top_candidates(scores, self._threshold)
        idx = best if rows is None else rows[best]
        # A box that is not finite (a broken model) goes now: one NaN made the class shift
        # below NaN for every box, so nothing was suppressed, and hid pixel coordinates.
        finite = np.isfinite(pred[:4, idx]).all(axis=0)
        best, idx = best[finite], idx[finite]
        if best.size == 0:
            return Detections(0)
        cls = class_scores[:, best].argmax(axis=0)
        centre_wh = np.ascontiguousarray(pred[:4, idx].T)
        if centre_wh.max() > 2.0:  # pixel coordinates: normalise by the input size
            centre_wh = centre_wh / self._pixels
        boxes = _cxcywh_to_xyxy(centre_wh)
        # Per-class NMS in one pass: shift each class to its own region so classes never overlap.
        span = np.float32(boxes.max() - boxes.min() + 1.0)
        keep = _nms(boxes + cls[:, None].astype(np.float32) * span, scores[best], YOLO_IOU)
        kept_cls, labels = cls[keep], self.labels
        return _detections(boxes[keep], scores[best][keep],
                           lambda i: _label_for(labels, int(kept_cls[i])), self._limit, area)


class YoloV5Decoder(YoloV8Decoder):
    """YOLOv5's export (export.py of the yolov5 repository): one output [1, N, 5+C], rows
    first, an objectness after the box and three anchors a grid cell; a box's score for a
    class is objectness x class score."""

    kind = "yolov5"
    objectness = True
    layout = ("one output [1, N, 5+C] with N = 3 x the {cells} grid cells of a {size} input "
              "(YOLOv5: three anchors a cell, an objectness after the box)")


# --------------------------------------------------------------------------- classifier


#: Last operators of a classifier whose outputs are probabilities already.
_PROBABILITY_OPS = frozenset({"SOFTMAX", "LOGISTIC"})
#: Last operators of a classifier whose outputs are logits: a head exported without its
#: activation ends in its dense layer (MobileNet v1's is a 1x1 convolution, then a reshape).
_LOGIT_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D"})


def _holds_logits(spec: TensorSpec) -> bool | None:
    """Whether a classifier's output holds logits (True) or probabilities (False), as far as
    the tensor and the graph tell; None when they do not.

    A quantized 8-bit output of scale 1/256 from zero holds [0, 1) and nothing else: what
    TFLite's quantized SOFTMAX writes (kernels/activations.cc SoftmaxPrepare: uint8 zero
    point 0, int8 -128). Otherwise the operator that computes it decides."""
    softmax_scale = math.isclose(spec.scale, 1 / 256, rel_tol=1e-3)
    if spec.quantized and spec.dtype.itemsize == 1 and softmax_scale \
            and spec.zero_point == np.iinfo(spec.dtype).min:
        return False
    if spec.producer in _PROBABILITY_OPS:
        return False
    if spec.producer in _LOGIT_OPS:
        return True
    return None


class ClassifierDecoder:
    """One output [1, C] of class scores: probabilities, or logits that get a softmax.

    Which, is decided once for the model, so its scores mean the same on every frame: from
    the output tensor and the operator that computes it when they tell (``_holds_logits``);
    else by its frames, and the first score outside 0..1, which no probability is, makes it
    logits for good. Until then the scores pass as they are: a model that never shows one
    (a sigmoid head read without its graph) gives probabilities."""

    kind = "classifier"

    def __init__(self, input_spec: TensorSpec, outputs: Sequence[TensorSpec],
                 labels: Sequence[str] | None, score_threshold: float,
                 max_detections: int) -> None:
        shape = outputs[0].shape if len(outputs) == 1 else ()
        if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
            raise DecoderError("expected one output [1, C] of class scores")
        self.classes: int | None = shape[1]
        #: True: logits (softmax on every frame); False: probabilities; None: not known yet.
        self.logits = _holds_logits(outputs[0])
        self.labels = labels
        self._threshold = score_threshold
        self._limit = max_detections

    def decode(self, outputs: Sequence[Array], area: Area = WHOLE) -> Detections:
        scores = np.asarray(outputs[0], np.float32).reshape(-1)
        if self.logits is None and scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
            self.logits = True
        if self.logits:
            e = np.exp(scores - scores.max())
            scores = (e / e.sum()).astype(np.float32)
        top = np.argsort(-scores, kind="stable")[:CLASSIFIER_TOP_K]
        top = top[scores[top] >= self._threshold]
        boxes = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (len(top), 1))
        labels = self.labels
        return _detections(boxes, scores[top], lambda i: _label_for(labels, int(top[i])),
                           self._limit, area)


# --------------------------------------------------------------------------- factory

_Factory = Callable[
    [TensorSpec, Sequence[TensorSpec], "Sequence[str] | None", float, int], Decoder
]
_DECODERS: dict[str, _Factory] = {
    "ssd": SsdDecoder,
    "blazeface": BlazeFaceDecoder,
    "yolov8": YoloV8Decoder,
    "yolov5": YoloV5Decoder,
    "classifier": ClassifierDecoder,
}


def make_decoder(
    kind: str,
    input_spec: TensorSpec,
    output_specs: Sequence[TensorSpec],
    labels: Sequence[str] | None,
    score_threshold: float,
    max_detections: int = MAX_DETECTIONS,
) -> Decoder:
    """Build the decoder for ``kind``; "auto" takes the first kind whose layout fits. Its
    results keep the best ``max_detections``."""
    if kind not in KINDS:
        raise DecoderError(f"unknown decoder kind {kind!r}; expected one of {', '.join(KINDS)}")
    tried = list(_DECODERS) if kind == "auto" else [kind]
    reasons = []
    for name in tried:
        try:
            return _DECODERS[name](input_spec, output_specs, labels, score_threshold,
                                   max_detections)
        except DecoderError as exc:
            reasons.append(f"{name}: {exc}")
    what = "no decoder recognises" if kind == "auto" else f"decoder {kind!r} does not fit"
    raise DecoderError(
        f"{what} the model outputs ({_listing(output_specs)}) for input "
        f"{input_spec.describe()}; " + "; ".join(reasons)
    )
