"""The saved-model target of `seqspec export`: a TensorFlow SavedModel whose serving signature takes any batch and length.

The Keras backend's model (seqspec_keras's backend.build(spec, weights)) is traced into one
tf.function, `serve`, with the input signature [None, None, features] (or [None, features] for a
vector input, [None, T, features] for a spec that fixes the length T), and written with
keras.export.ExportArchive. A SavedModel holds the traced graph and the variables, not the
Python classes: tf.saved_model.load restores it with TensorFlow alone, so seqspec's own Keras
layers (PeepholeLSTMCell, LNSimpleRNNCell, WaveNet) are not needed at load time. Keras's
recurrent layers become tf.while_loop over the symbolic length.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from seqspec import BackendError, Spec

from . import backend

RUNNER = pathlib.Path(__file__).with_name("_run_saved_model.py")
SUFFIX = ""  # a directory
SIGNATURE = "serving_default"


def needs_fixed_shape(spec: Spec, dtype: str) -> Optional[str]:
    """None: the serving signature takes any batch and any length the spec accepts."""
    return None


def with_dtype(spec: Spec, dtype: str) -> Spec:
    """`spec` in `dtype` (the same object when it already is), keeping its source for errors."""
    if dtype == spec.dtype:
        return spec
    copy = spec.model_copy(update={"dtype": dtype})
    copy._source = spec._source
    return copy


def input_signature(spec: Spec, dtype: str, shape: Optional[tuple[int, ...]] = None) -> tf.TensorSpec:
    """The serving input: [batch, time, features] (token ids: [batch, time] in the input's integer
    dtype) with None for every free axis, or `shape` fixed."""
    dtype = spec.input.dtype or dtype
    if shape is not None:
        return tf.TensorSpec(list(shape), dtype, name="x")
    return tf.TensorSpec([None, *spec.input.shape], dtype, name="x")


def keras_model(spec: Spec, weights: dict[str, np.ndarray], dtype: str) -> keras.Model:
    """The Keras backend's model of `spec` in `dtype`, with the canonical `weights`."""
    spec = with_dtype(spec, dtype)
    return backend.build(spec, {name: np.asarray(a, dtype=dtype) for name, a in weights.items()})


def export_artifact(spec: Spec, weights: dict[str, np.ndarray], path: pathlib.Path, dtype: str, shape: Optional[tuple[int, ...]] = None) -> list[str]:
    """Write a SavedModel directory at `path`: signature "serving_default" takes x (in `dtype`)
    and returns {"output_0": the model's output}; tf.saved_model.load(path) runs it."""
    model = keras_model(spec, weights, dtype)
    signature = input_signature(spec, dtype, shape)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=lambda x: model(x, training=False), input_signature=[signature])
    try:
        archive.write_out(str(path), verbose=False)
    except (ValueError, TypeError, tf.errors.OpError) as e:  # a trace TensorFlow refuses: one located line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BackendError(f"{spec.locate('layers')}: saved-model: TensorFlow cannot save this model: {first}") from None
    dims = ["batch" if d is None and i == 0 else "time" if d is None else str(d) for i, d in enumerate(signature.shape.as_list())]
    what = f"{spec.input.dtype} token ids" if spec.input.tokens else dtype
    return [f"saved-model: signature {SIGNATURE!r} takes x [{', '.join(dims)}] {what} (None axes dynamic) and returns output_0"]
