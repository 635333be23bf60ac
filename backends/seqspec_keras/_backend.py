"""The Keras backend: a seqspec.Backend that compiles a spec to a functional Keras 3 model on TensorFlow."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import keras
import numpy as np
import tensorflow as tf

import seqspec
from seqspec import BackendError, Spec

from . import _resume, _weights
from ._builders import BACKEND_NAME, BUILDERS, build_model
from ._layers import ACTIVATIONS
from ._weights import WEIGHT_MAPS, model_bindings

SUFFIX = ".keras"

# One tf.function per model is by design (see _compiled); TensorFlow's "retracing" warning for
# many models in one process (seqspec check specs/) is noise on the user's terminal.
tf.get_logger().setLevel("ERROR")


def _input_dtype(model: keras.Model) -> str:
    return keras.backend.standardize_dtype(model.inputs[0].dtype)


def _output_dtype(model: keras.Model) -> str:
    """The model's float dtype (its input's, unless the input is token ids)."""
    return keras.backend.standardize_dtype(model.outputs[0].dtype)


def _numpy(value, dtype: str) -> np.ndarray:
    """A TensorFlow tensor or Keras variable as NumPy in `dtype`.

    `.numpy()` rather than keras.ops.convert_to_numpy, whose np.array(tensor) warns under NumPy 2.
    """
    return np.asarray(value.numpy()).astype(dtype, copy=False)


def _top_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The Keras layers of the spec's layers, in order (the functional graph minus its input)."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


_COMPILED: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def _compiled(model: keras.Model, training: bool):
    """model(x, training=...) as a tf.function traced once for any batch size and length."""
    per_model = _COMPILED.setdefault(model, {})
    if training not in per_model:
        spec = tf.TensorSpec(model.inputs[0].shape, model.inputs[0].dtype)  # (None, time|None, features)
        per_model[training] = tf.function(lambda x: model(x, training=training), input_signature=[spec])
    return per_model[training]


class KerasBackend(seqspec.Backend):
    """Compiles a Spec to a functional keras.Model (Keras 3, TensorFlow), one Keras layer `layers.{i}` per spec layer."""

    name = BACKEND_NAME
    extra = "keras"
    suffix = SUFFIX
    builders = BUILDERS
    weight_maps = WEIGHT_MAPS
    activations = ACTIVATIONS

    def compile(self, spec: Spec) -> keras.Model:
        """The keras.Model of `spec` in spec.dtype with Keras's own initialisation. Raises
        seqspec.BackendError for a key Keras cannot honour exactly, naming the layer, the key and
        this backend."""
        return build_model(spec)

    def get_weights(self, model: keras.Model, spec: Spec) -> dict[str, np.ndarray]:
        return _weights.get_weights(model, spec)

    def assign_weights(self, model: keras.Model, spec: Spec, weights: dict[str, np.ndarray]) -> None:
        _weights.set_weights(model, spec, weights)

    def start_world(self, plan) -> None:
        from ._distributed import start_world

        start_world(plan)

    def fit(self, spec: Spec, model: keras.Model, plan, train, validation) -> list[dict]:
        from ._train import fit

        return fit(spec, model, plan, train, validation)

    def versions(self) -> dict:
        return {"keras": keras.__version__, "tensorflow": tf.__version__}

    def count_params(self, model: keras.Model) -> tuple[int, int]:
        def count(variables) -> int:
            return int(sum(np.prod(v.shape, dtype=np.int64) for v in variables))

        return count(model.trainable_weights), count(model.non_trainable_weights)

    def predict(self, model: keras.Model, x: np.ndarray) -> np.ndarray:
        """The output for x ([batch, time, features] or [batch, features]) in inference mode,
        through one tf.function per model that accepts any batch size and length (an eager
        Keras RNN runs its time loop in Python, about 5 ms a step)."""
        dtype = _input_dtype(model)
        return _numpy(_compiled(model, False)(tf.convert_to_tensor(np.asarray(x, dtype=dtype))), _output_dtype(model))

    def layer_outputs(self, model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
        """Every spec layer's output for x, in inference mode, in order."""
        dtype = _input_dtype(model)
        layers = _top_layers(model)
        # A dict of outputs, because Keras unwraps a list of one output into the bare tensor.
        probe = keras.Model(model.inputs[0], {layer.name: layer.output for layer in layers})
        outputs = probe(np.asarray(x, dtype=dtype), training=False)
        return [_numpy(outputs[layer.name], _output_dtype(model)) for layer in layers]

    def gradients(
        self, model: keras.Model, spec: Spec, x: np.ndarray, r: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """For loss = sum(output * r) in inference mode: (output, dloss/dx, {canonical name: dloss/dw})
        over the trainable canonical arrays, mapped by the same Bindings as the weights; for token
        ids, which have no gradient, dloss/dx is None."""
        tokens = spec.input.tokens
        x_t = tf.convert_to_tensor(np.asarray(x, dtype=spec.input.dtype or spec.dtype))
        bindings = [b for b in model_bindings(model, spec) if b.variable.trainable]
        with tf.GradientTape() as tape:
            if not tokens:
                tape.watch(x_t)
            y = model(x_t, training=False)
            loss = tf.reduce_sum(y * tf.convert_to_tensor(np.asarray(r, dtype=spec.dtype)))
        sources = ([] if tokens else [x_t]) + [b.variable.value for b in bindings]
        grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        found: dict[str, np.ndarray] = {}
        for binding, grad in zip(bindings, grads[0 if tokens else 1 :]):
            found.update(binding.split(_numpy(tf.convert_to_tensor(grad), spec.dtype)))
        dw = {name: np.ascontiguousarray(found[name]) for name in _weights.trainable_names(spec)}
        return _numpy(y, spec.dtype), None if tokens else _numpy(grads[0], spec.dtype), dw

    def training_output(self, model: keras.Model, x: np.ndarray, seed: int) -> np.ndarray:
        """One forward pass in training mode, dropout masks drawn from `seed`.

        The model's state is put back afterwards, so that the pass leaves no trace: batch-norm
        moving statistics and the dropout seed generators are restored.
        """
        state = [(v, v.numpy()) for v in model.non_trainable_weights + _resume.seed_states(model)]
        _resume.seed_dropout(model, seed)
        try:
            dtype = _input_dtype(model)
            return _numpy(_compiled(model, True)(tf.convert_to_tensor(np.asarray(x, dtype=dtype))), _output_dtype(model))
        finally:
            for v, value in state:
                v.assign(value)

    def save(self, model: keras.Model, spec: Spec, path: str) -> None:
        """Write a .keras file; a path with another suffix (an atomic writer's temporary name) works too."""
        path = os.fspath(path)
        if path.endswith(SUFFIX):
            model.save(path)
            return
        # Keras insists on the suffix, so write beside the target and move it into place.
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
            staged = os.path.join(tmp, "model" + SUFFIX)
            model.save(staged)
            os.replace(staged, path)

    def load(self, path: str) -> keras.Model:
        """Reload a model written by `save` (its custom layers are registered by importing seqspec_keras)."""
        path = os.fspath(path)
        self.regular_file(path)
        try:
            if path.endswith(SUFFIX):
                return keras.saving.load_model(path)
            with tempfile.TemporaryDirectory() as tmp:
                staged = os.path.join(tmp, "model" + SUFFIX)
                shutil.copyfile(path, staged)
                return keras.saving.load_model(staged)
        except TypeError as e:
            # Keras names neither the file nor the missing registration: "Could not locate class
            # 'PeepholeLSTMCell'" when seqspec_keras's layers were not registered in this process.
            if "Could not locate" in str(e) or "seqspec" in str(e):
                raise BackendError(f"{path}: needs seqspec's Keras layers: import seqspec_keras, or use seqspec.load_model") from None
            raise
