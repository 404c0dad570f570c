"""Write tiny .tflite models at test time with the ``tflite`` schema bindings.

The models are real flatbuffers that the interpreter loads and runs. Their outputs are
constants folded with the image input through ops the 2.14 interpreter runs (MUL by zero,
MEAN, ADD, QUANTIZE/DEQUANTIZE), so a test knows the exact values every output will hold while
the input still flows through the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator as Op
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

_TENSOR_TYPES = {
    np.dtype(np.float32): TensorType.FLOAT32,
    np.dtype(np.int32): TensorType.INT32,
    np.dtype(np.uint8): TensorType.UINT8,
    np.dtype(np.int8): TensorType.INT8,
}

Quant = tuple[float, int]  # (scale, zero_point)
_OptionsWriter = Callable[[flatbuffers.Builder], int]


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    buffer: int
    quant: Optional[Quant]


@dataclass
class _Operator:
    opcode: int
    inputs: list[int]
    outputs: list[int]
    options_type: int
    options: Optional[_OptionsWriter]


class GraphBuilder:
    """A single-subgraph model: add tensors and ops, then ``build()`` the flatbuffer."""

    def __init__(self) -> None:
        self._buffers: list[bytes] = [b""]  # buffer 0 is the empty one, by convention
        self._tensors: list[_Tensor] = []
        self._ops: list[_Operator] = []
        self._opcodes: list[int] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, name: str, shape: Sequence[int], dtype: Any,
               quant: Optional[Quant] = None, data: Optional[bytes] = None) -> int:
        buffer = 0
        if data is not None:
            self._buffers.append(data)
            buffer = len(self._buffers) - 1
        self._tensors.append(_Tensor(name, tuple(shape), np.dtype(dtype), buffer, quant))
        return len(self._tensors) - 1

    def const(self, name: str, array: Any, dtype: Any = np.float32) -> int:
        arr = np.ascontiguousarray(array, dtype=dtype)
        return self.tensor(name, arr.shape, arr.dtype, data=arr.tobytes())

    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int],
           options_type: int = 0, options: Optional[_OptionsWriter] = None) -> None:
        if code not in self._opcodes:
            self._opcodes.append(code)
        self._ops.append(_Operator(self._opcodes.index(code), list(inputs), list(outputs),
                                   options_type, options))

    # -- serialisation ------------------------------------------------------------------

    def build(self) -> bytes:
        b = flatbuffers.Builder(4096)
        buffers = [self._buffer(b, data) for data in self._buffers]
        tensors = [self._tensor(b, t) for t in self._tensors]
        ops = [self._operator(b, o) for o in self._ops]

        tflite.SubGraphStartTensorsVector(b, len(tensors))
        for t in reversed(tensors):
            b.PrependUOffsetTRelative(t)
        tensors_vec = b.EndVector()
        inputs_vec = _int_vector(b, self.inputs)
        outputs_vec = _int_vector(b, self.outputs)
        tflite.SubGraphStartOperatorsVector(b, len(ops))
        for o in reversed(ops):
            b.PrependUOffsetTRelative(o)
        ops_vec = b.EndVector()
        name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraphAddInputs(b, inputs_vec)
        tflite.SubGraphAddOutputs(b, outputs_vec)
        tflite.SubGraphAddOperators(b, ops_vec)
        tflite.SubGraphAddName(b, name)
        subgraph = tflite.SubGraphEnd(b)

        codes = []
        for code in self._opcodes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            codes.append(tflite.OperatorCodeEnd(b))

        tflite.ModelStartOperatorCodesVector(b, len(codes))
        for c in reversed(codes):
            b.PrependUOffsetTRelative(c)
        codes_vec = b.EndVector()
        tflite.ModelStartSubgraphsVector(b, 1)
        b.PrependUOffsetTRelative(subgraph)
        subgraphs_vec = b.EndVector()
        tflite.ModelStartBuffersVector(b, len(buffers))
        for buf in reversed(buffers):
            b.PrependUOffsetTRelative(buf)
        buffers_vec = b.EndVector()
        description = b.CreateString("wattgate test model")

        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, description)
        tflite.ModelAddBuffers(b, buffers_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def write(self, path: Path) -> Path:
        path.write_bytes(self.build())
        return path

    @staticmethod
    def _buffer(b: flatbuffers.Builder, data: bytes) -> int:
        vec = None
        if data:
            # 16-byte alignment, as the converter writes constant data.
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head:b.head + len(data)] = data
            vec = b.EndVector()
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return int(tflite.BufferEnd(b))

    @staticmethod
    def _tensor(b: flatbuffers.Builder, t: _Tensor) -> int:
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.shape)
        quant = None
        if t.quant is not None:
            tflite.QuantizationParametersStartScaleVector(b, 1)
            b.PrependFloat32(t.quant[0])
            scale = b.EndVector()
            tflite.QuantizationParametersStartZeroPointVector(b, 1)
            b.PrependInt64(t.quant[1])
            zero_point = b.EndVector()
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero_point)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, _TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, t.buffer)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return int(tflite.TensorEnd(b))

    @staticmethod
    def _operator(b: flatbuffers.Builder, o: _Operator) -> int:
        inputs = _int_vector(b, o.inputs)
        outputs = _int_vector(b, o.outputs)
        options = o.options(b) if o.options is not None else None
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, o.opcode)
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, o.options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        return int(tflite.OperatorEnd(b))


def _int_vector(b: flatbuffers.Builder, values: Sequence[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(int(v))
    return int(b.EndVector())


def _reducer_options(keep_dims: bool) -> _OptionsWriter:
    def write(b: flatbuffers.Builder) -> int:
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, keep_dims)
        return int(tflite.ReducerOptionsEnd(b))

    return write


def _softmax_options(beta: float) -> _OptionsWriter:
    # Without options the interpreter takes beta 0, and every class comes out 1 / C.
    def write(b: flatbuffers.Builder) -> int:
        tflite.SoftmaxOptionsStart(b)
        tflite.SoftmaxOptionsAddBeta(b, beta)
        return int(tflite.SoftmaxOptionsEnd(b))

    return write


def _fully_connected_options() -> _OptionsWriter:
    def write(b: flatbuffers.Builder) -> int:
        tflite.FullyConnectedOptionsStart(b)
        return int(tflite.FullyConnectedOptionsEnd(b))

    return write


# -- ready-made models ------------------------------------------------------------------


@dataclass
class ConstOutput:
    """One model output holding ``values``; quantised to ``dtype`` with ``quant`` if given."""

    name: str
    values: Any
    dtype: Any = np.float32
    quant: Optional[Quant] = None


def _real_input(g: GraphBuilder, size: tuple[int, int], dtype: Any,
                quant: Optional[Quant]) -> int:
    """Add the image input [1, H, W, 3]; return the float tensor that follows it."""
    width, height = size
    shape = (1, height, width, 3)
    x = g.tensor("input", shape, dtype, quant=quant)
    g.inputs.append(x)
    if np.dtype(dtype) == np.float32:
        return x
    real = g.tensor("input_real", shape, np.float32)
    g.op(Op.DEQUANTIZE, [x], [real])
    return real


def constant_model(path: Path, outputs: Sequence[ConstOutput], size: tuple[int, int] = (32, 32),
                   input_dtype: Any = np.float32,
                   input_quant: Optional[Quant] = None) -> Path:
    """Outputs = constant + mean(input x 0), in the order given, with the names given."""
    g = GraphBuilder()
    width, height = size
    real = _real_input(g, size, input_dtype, input_quant)
    zeroed = g.tensor("zeroed", (1, height, width, 3), np.float32)
    g.op(Op.MUL, [real, g.const("zero", [0.0])], [zeroed])
    zero = g.tensor("zero_scalar", (1,), np.float32)
    g.op(Op.MEAN, [zeroed, g.const("axes", [1, 2, 3], np.int32)], [zero],
         BuiltinOptions.ReducerOptions, _reducer_options(False))
    for out in outputs:
        values = np.asarray(out.values, np.float32)
        const = g.const(f"{out.name}_const", values)
        if out.quant is None:
            t = g.tensor(out.name, values.shape, np.float32)
            g.op(Op.ADD, [const, zero], [t])
        else:
            tmp = g.tensor(f"{out.name}_float", values.shape, np.float32)
            g.op(Op.ADD, [const, zero], [tmp])
            t = g.tensor(out.name, values.shape, out.dtype, quant=out.quant)
            g.op(Op.QUANTIZE, [tmp], [t])
        g.outputs.append(t)
    return g.write(path)


def mean_rgb_model(path: Path, size: tuple[int, int] = (32, 32), input_dtype: Any = np.float32,
                   input_quant: Optional[Quant] = None, gain: float = 1.0,
                   bias: float = 0.0, fully_connected: bool = False,
                   softmax: bool = False) -> Path:
    """A 3-class "classifier": output [1, 3] = mean over the image of each input channel (as
    the model sees it, R, G, B) x gain + bias. It shows exactly what preprocessing fed in.

    fully_connected: the x gain + bias is a FULLY_CONNECTED layer (weights gain x I), as a
    classifier's head ends, instead of MUL and ADD. softmax: a SOFTMAX (beta 1) follows, as
    in a classifier exported with its activation; the output is then softmax(those)."""
    g = GraphBuilder()
    real = _real_input(g, size, input_dtype, input_quant)
    mean = g.tensor("channel_mean", (1, 3), np.float32)
    g.op(Op.MEAN, [real, g.const("axes", [1, 2], np.int32)], [mean],
         BuiltinOptions.ReducerOptions, _reducer_options(False))
    out = g.tensor("logits" if softmax else "probabilities", (1, 3), np.float32)
    if fully_connected:
        g.op(Op.FULLY_CONNECTED,
             [mean, g.const("weights", np.eye(3) * gain), g.const("bias", [bias] * 3)], [out],
             BuiltinOptions.FullyConnectedOptions, _fully_connected_options())
    else:
        scaled = g.tensor("scaled", (1, 3), np.float32)
        g.op(Op.MUL, [mean, g.const("gain", [gain])], [scaled])
        g.op(Op.ADD, [scaled, g.const("bias", [bias])], [out])
    if softmax:
        logits, out = out, g.tensor("probabilities", (1, 3), np.float32)
        g.op(Op.SOFTMAX, [logits], [out], BuiltinOptions.SoftmaxOptions, _softmax_options(1.0))
    g.outputs.append(out)
    return g.write(path)


def mean_channels_model(path: Path, size: tuple[int, int] = (32, 32), channels: int = 1,
                        gain: float = 1.0, bias: float = 0.0) -> Path:
    """A float "classifier" over an input [1, H, W, channels]: output [1, channels] = mean
    over the image of each channel x gain + bias (a grey model when channels is 1)."""
    g = GraphBuilder()
    width, height = size
    x = g.tensor("input", (1, height, width, channels), np.float32)
    g.inputs.append(x)
    mean = g.tensor("channel_mean", (1, channels), np.float32)
    g.op(Op.MEAN, [x, g.const("axes", [1, 2], np.int32)], [mean],
         BuiltinOptions.ReducerOptions, _reducer_options(False))
    scaled = g.tensor("scaled", (1, channels), np.float32)
    g.op(Op.MUL, [mean, g.const("gain", [gain])], [scaled])
    out = g.tensor("probabilities", (1, channels), np.float32)
    g.op(Op.ADD, [scaled, g.const("bias", [bias])], [out])
    g.outputs.append(out)
    return g.write(path)
