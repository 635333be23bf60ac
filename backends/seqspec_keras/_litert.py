"""The litert target of `seqspec export`: a .tflite flatbuffer whose LSTM layers are TFLite's fused sequence-LSTM op, with no Flex ops.

TensorFlow's converter fuses an LSTM only when it finds it as a composite function: a
tf.function carrying the attribute api_implements = "lstm_<id>" (plus time_major and
go_backwards), whose arguments are (inputs, init_h, init_c, kernel, recurrent_kernel, bias) and
whose five results are (last_output, outputs, h, c, runtime), the signature of Keras 2's
standard_lstm (tensorflow/compiler/mlir/lite/utils/lstm_utils.cc, ConvertKerasLSTMLayer;
the "TensorFlow RNN conversion to LiteRT" guide). Keras 3's LSTM no longer emits that function
(on TensorFlow it is a plain while loop), so a converted Keras 3 LSTM is a WHILE loop of small
ops, or needs Flex ops (LiteRT issue 41). Here the model is traced layer by layer, and each
Keras LSTM with the fused op's activations (tanh, sigmoid) and bias is traced as that composite
function (`_composite_lstm`), forward or go_backwards inside a Bidirectional; the converter turns
it into UNIDIRECTIONAL_SEQUENCE_LSTM. The other recurrent layers (simple_rnn, gru, the rnn cells)
have no composite route in the converter: they stay WHILE loops of builtin ops.

Only builtin ops are allowed (target_spec.supported_ops = TFLITE_BUILTINS): a layer that would
need a Flex (Select TF) op fails conversion, and that is a located one-line BackendError.
The input shape is fixed at conversion ([batch, time, features] given by `shape`; see
needs_fixed_shape); LiteRT runs float32 only here.
"""

from __future__ import annotations

import inspect
import pathlib
import tempfile
import uuid
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from seqspec import BackendError, Spec

from . import quiet_stderr
from ._saved_model import keras_model

RUNNER = pathlib.Path(__file__).with_name("_run_litert.py")
SUFFIX = ".tflite"
FUSED_LSTM_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM")
FLEX_PREFIX = "Flex"


def needs_fixed_shape(spec: Spec, dtype: str) -> Optional[str]:
    """Why the input shape is fixed at export (always: see the reason)."""
    if len(spec.input.shape) == 1 or spec.input.shape[0] is not None:
        return (
            "litert: the converter is given a fully static input (batch included): its fused LSTM op and the "
            "WHILE loops of the other recurrent layers are shape-specialised"
        )
    return (
        "litert: the converter is given a fully static input (batch and time): its fused LSTM op and the "
        "WHILE loops of the other recurrent layers are shape-specialised, and a dynamic time axis is refused by the TensorList lowering"
    )


def _fusable(layer: keras.layers.Layer, backward: bool = False) -> bool:
    """A Keras LSTM that TFLite's fused op computes exactly: tanh and sigmoid, a bias, and
    go_backwards only as the backward pass of a Bidirectional (`backward`)."""
    if not isinstance(layer, keras.layers.LSTM):
        return False
    cell = layer.cell
    return (
        cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
        and cell.use_bias
        and layer.go_backwards == backward
    )


def _composite_lstm(go_backwards: bool):
    """Keras 2's standard_lstm as the composite function the converter fuses (one per call site)."""

    @tf.function(
        autograph=False,
        experimental_attributes={
            "api_implements": f"lstm_{uuid.uuid4()}",
            "api_preferred_device": "CPU",
            "time_major": False,
            "go_backwards": go_backwards,
        },
    )
    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        # inputs [B, T, F] -> (last_output [B, u], outputs [B, T, u], h, c, runtime); Keras gate
        # order i, f, c, o in the kernels' columns.
        seq = tf.transpose(inputs, [1, 0, 2])
        if go_backwards:
            seq = tf.reverse(seq, [0])

        def step(carry, x_t):
            h, c = carry
            z = tf.matmul(x_t, kernel) + tf.matmul(h, recurrent_kernel) + bias
            zi, zf, zc, zo = tf.split(z, 4, axis=1)
            c = tf.sigmoid(zf) * c + tf.sigmoid(zi) * tf.tanh(zc)
            h = tf.sigmoid(zo) * tf.tanh(c)
            return h, c

        hs, cs = tf.scan(step, seq, initializer=(init_h, init_c))
        outputs = tf.transpose(hs, [1, 0, 2])
        return outputs[:, -1], outputs, hs[-1], cs[-1], tf.constant(0.0, dtype=inputs.dtype)

    return standard_lstm


def _lstm(layer: keras.layers.LSTM, x: tf.Tensor, go_backwards: bool = False) -> tf.Tensor:
    """A fusable Keras LSTM on x through the composite function; as layer(x) in inference."""
    cell = layer.cell
    zeros = tf.zeros([tf.shape(x)[0], cell.units], dtype=x.dtype)
    last, outputs, _, _, _ = _composite_lstm(go_backwards)(x, zeros, zeros, *(tf.convert_to_tensor(v.value) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)))
    if not layer.return_sequences:
        return last
    return outputs


def _bidirectional(layer: keras.layers.Bidirectional, x: tf.Tensor) -> tf.Tensor:
    """A Bidirectional of fusable LSTMs: both passes fused, merged as Keras merges them."""
    a = _lstm(layer.forward_layer, x)
    b = _lstm(layer.backward_layer, x, go_backwards=True)
    if layer.backward_layer.return_sequences:
        b = tf.reverse(b, [1])  # Keras re-aligns the backward outputs to the input steps
    mode = layer.merge_mode
    if mode == "concat":
        return tf.concat([a, b], axis=-1)
    if mode == "sum":
        return a + b
    if mode == "mul":
        return a * b
    return (a + b) / 2


def _call(layer: keras.layers.Layer, x: tf.Tensor, mask: Optional[tf.Tensor]) -> tuple[tf.Tensor, Optional[tf.Tensor], bool]:
    """(the layer's output in inference, the mask it gives, whether it went through the fused LSTM).

    The mask is handed on explicitly, as the functional model hands it (compute_mask): a layer
    that reads a mask is never fused, since TFLite's fused LSTM has no mask input."""
    if mask is None and _fusable(layer):
        return _lstm(layer, x), None, True
    if mask is None and isinstance(layer, keras.layers.Bidirectional) and _fusable(layer.forward_layer) and _fusable(layer.backward_layer, backward=True):
        return _bidirectional(layer, x), None, True
    reads = mask is not None and "mask" in inspect.signature(layer.call).parameters
    y = layer(x, training=False, mask=mask) if reads else layer(x, training=False)
    return y, layer.compute_mask(x, mask), False


def _top_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def convert(spec: Spec, weights: dict[str, np.ndarray], shape: tuple[int, ...], dtype: str = "float32") -> tuple[bytes, list[int]]:
    """(the .tflite flatbuffer of `spec` at the fixed input `shape`, the indices of the layers traced as fused LSTMs)."""
    model = keras_model(spec, weights, dtype)
    layers = _top_layers(model)
    fused: list[int] = []

    def serve(x):
        fused.clear()
        mask = None
        for i, layer in enumerate(layers):
            x, mask, was_fused = _call(layer, x, mask)
            if was_fused:
                fused.append(i)
        return x

    # Through a SavedModel: its converter path freezes the variables (from a concrete function
    # they stay resource variables that the .tflite reads uninitialised, and freezing them by
    # hand first, convert_to_constants, drops the composite functions the fusion needs).
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serve", fn=serve, input_signature=[tf.TensorSpec(list(shape), spec.input.dtype or dtype, name="x")])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            with quiet_stderr():  # the converter prints its errors there before raising them
                return converter.convert(), list(fused)
        except Exception as e:  # the converter's errors run to pages: the first line that says what
            raise BackendError(f"{spec.locate('layers', _culprit(spec, str(e)))}: litert: {_first_reason(str(e))}") from None


def _first_reason(message: str) -> str:
    import re

    # The converter prefixes each error with the MLIR location (loc(callsite(fused[...]))): keep the op and what it lacks.
    op = re.search(r"'(tf\.\w+)' op ([^\n]*)", message)
    if op:
        # The details list each op with its tensor types: float64 ones have no builtin kernel
        # (seqspec runs the ln_simple_rnn recurrence in float64 on every backend).
        wide = re.search(re.escape(op.group(1)) + r"\([^\n]*xf64>", message)
        on = " on float64 tensors" if wide else ""
        return f"needs the TensorFlow op {op.group(1)}{on} ({op.group(2).strip()}), which LiteRT has no builtin for (only builtin TFLite ops are allowed, no Flex)"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip() + " (only builtin TFLite ops are allowed, no Flex)"
    return (lines[0] if lines else "the converter failed") + " (only builtin TFLite ops are allowed, no Flex)"


def _culprit(spec: Spec, message: str) -> int:
    """The index of the layer the converter's message names (its Keras name is layers.{i}), else 0."""
    import re

    found = re.findall(r"layers\.(\d+)", message)
    return int(found[0]) if found else 0


def op_names(model: bytes) -> list[str]:
    """The builtin (or custom) op names of every operator in the model's subgraphs, from the flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    codes = m.operatorCodes
    for sub in m.subgraphs:
        for op in sub.operators or []:
            code = codes[op.opcodeIndex]
            which = max(code.builtinCode, code.deprecatedBuiltinCode)
            names.append(code.customCode.decode() if code.customCode else builtin.get(which, str(which)))
    return names


def export_artifact(spec: Spec, weights: dict[str, np.ndarray], path: pathlib.Path, dtype: str, shape: Optional[tuple[int, ...]] = None) -> list[str]:
    """Write the .tflite model of `spec` at `path` for the fixed input `shape` (required: see
    needs_fixed_shape), float32; the LiteRT interpreter runs it (input "x", output "output_0")."""
    if dtype != "float32":
        raise BackendError(f"{spec.locate('dtype')}: litert: exports float32 only (LiteRT's kernels, the fused LSTM among them, are float32), not {dtype}")
    if shape is None:
        raise BackendError(f"{spec.locate('input', 'shape')}: {needs_fixed_shape(spec, dtype)}: give the input shape to export at")
    model, fused = convert(spec, weights, tuple(shape), dtype)
    ops = op_names(model)
    flex = sorted({name for name in ops if name.startswith(FLEX_PREFIX)})
    if flex:  # cannot happen with TFLITE_BUILTINS only; a guard, not a silent artifact
        raise BackendError(f"{spec.locate('layers')}: litert: the converted model needs Flex ops {', '.join(flex)}")
    with open(path, "wb") as f:
        f.write(model)
    notes = [f"litert: input fixed at {list(shape)}: {needs_fixed_shape(spec, dtype)}"]
    lstm_ops = sorted({name for name in ops if name in FUSED_LSTM_OPS})
    if fused:
        notes.append(f"litert: layers {', '.join(f'[{i}]' for i in fused)} use the fused {', '.join(lstm_ops) or 'LSTM'} op; no Flex ops")
        notes.append(
            "litert: the fused LSTM keeps its states in variable tensors that persist between invocations: "
            "call interpreter.reset_all_variables() before each invoke() to start every batch from zero states, as Keras does"
        )
    else:
        notes.append("litert: no fused LSTM in this model; builtin ops only, no Flex ops")
    return notes
