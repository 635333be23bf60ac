"""Reading a Keras model (a chain of built-in or seqspec layers) into spec layers and canonical weights, one function per Keras layer class."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import keras
import numpy as np

import seqspec as s

from ._layers import GELU, LeakyReLU, LNSimpleRNNCell, PeepholeLSTMCell, WaveNet
from ._weights import bindings

# Options that never change the function a layer computes, in inference or in training.
IGNORED = {
    "name", "trainable", "dtype", "seed", "unroll", "use_cudnn", "build_config", "implementation",
    "kernel_initializer", "recurrent_initializer", "bias_initializer", "beta_initializer", "gamma_initializer",
    "moving_mean_initializer", "moving_variance_initializer", "embeddings_initializer",
    # Acts only on masked steps (Bidirectional sets it on the layers it wraps); the proof feeds
    # masked batches to every model that makes a mask, so a difference there fails the import.
    "zero_output_for_mask",
    "synchronized",  # cross-replica batch statistics in training: the same function on one device
}
# Options that act only through the training loss or the optimizer's updates: dropped, and said so.
TRAINING_ONLY = {
    "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
    "beta_regularizer", "gamma_regularizer", "embeddings_regularizer",
    "kernel_constraint", "recurrent_constraint", "bias_constraint", "beta_constraint", "gamma_constraint", "embeddings_constraint",
}


def _label(layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


class Options:
    """A Keras layer's config, read key by key: every key is used, required to be one value, ignored
    (IGNORED), or noted as training-only (TRAINING_ONLY); any other key left is refused by name."""

    def __init__(self, layer, config: Optional[dict] = None):
        self.layer = layer
        self.config = layer.get_config() if config is None else config
        self.used: set[str] = set()

    def __getitem__(self, key: str):
        self.used.add(key)
        return self.config[key]

    def get(self, key: str, default=None):
        self.used.add(key)
        return self.config.get(key, default)

    def require(self, key: str, allowed: Any, why: str = "has no spec equivalent") -> None:
        """Refuse unless config[key] (when present) is `allowed` (a value, or a tuple of values)."""
        self.used.add(key)
        if key not in self.config:
            return
        value = self.config[key]
        ok = value in allowed if isinstance(allowed, tuple) else value == allowed
        if not ok:
            raise s.ImportRefused(f"{_label(self.layer)}: {key}={_show(value)} {why}")

    def finish(self, notes: list[str]) -> None:
        for key, value in self.config.items():
            if key in self.used or key in IGNORED:
                continue
            if key in TRAINING_ONLY:
                if value is not None:
                    notes.append(f"{_label(self.layer)}: {key} dropped (it acts only in training, through the loss or the optimizer)")
                continue
            raise s.ImportRefused(f"{_label(self.layer)}: option {key}={_show(value)} has no spec equivalent")


def _show(value: Any) -> str:
    if isinstance(value, dict) and "class_name" in value:
        return value["class_name"]
    return repr(value)


def activation(fn, layer, key: str = "activation"):
    """The spec activation of a Keras activation (a function, or seqspec's LeakyReLU / GELU objects)."""
    if isinstance(fn, LeakyReLU):
        return {"name": "leaky_relu", "negative_slope": fn.negative_slope}
    if isinstance(fn, GELU):
        return "gelu"
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    if isinstance(name, str) and name in s.ACTIVATIONS:
        return name
    shown = name if isinstance(name, str) else getattr(fn, "__name__", type(fn).__name__)
    raise s.ImportRefused(f"{_label(layer)}: {key} {shown!r} has no spec equivalent (the spec's: {', '.join(s.ACTIVATIONS)})")


# --- layer readers: (layer, notes) -> spec layer document ---------------------------------------

_LAYER_KEYS = ("return_sequences",)


def _cell_doc(cell, kind: str, notes: list[str], opts: Optional[Options] = None) -> dict:
    """The keys of a simple_rnn, lstm, gru, ln_simple_rnn or peephole_lstm cell, from the cell object
    and the config holding its options (the layer's for SimpleRNN/LSTM/GRU, the cell's for RNN)."""
    o = opts or Options(cell)
    doc = {"type": kind, "units": o["units"], "use_bias": o["use_bias"], "dropout": float(o["dropout"]), "recurrent_dropout": float(o["recurrent_dropout"])}
    o.used.add("activation")
    doc["activation"] = activation(cell.activation, o.layer)
    if kind in ("lstm", "gru", "peephole_lstm"):
        o.used.add("recurrent_activation")
        doc["recurrent_activation"] = activation(cell.recurrent_activation, o.layer, "recurrent_activation")
    if kind in ("lstm", "peephole_lstm"):
        doc["unit_forget_bias"] = o["unit_forget_bias"]
    if kind == "gru":
        doc["reset_after"] = o["reset_after"]
    if kind == "ln_simple_rnn":
        doc["epsilon"] = float(o["epsilon"])
    if opts is None:
        o.finish(notes)
    return doc


_CELL_KINDS = {
    keras.layers.SimpleRNNCell: "simple_rnn",
    keras.layers.LSTMCell: "lstm",
    keras.layers.GRUCell: "gru",
    LNSimpleRNNCell: "ln_simple_rnn",
    PeepholeLSTMCell: "peephole_lstm",
}


def _recurrent_options(o: Options) -> None:
    """The options of a recurrent layer the spec cannot express unless they take their default."""
    o.require("return_state", False, "returns the states too; a spec layer has one output")
    o.require("stateful", False, "carries states between batches; a spec model starts every batch from zeros")
    # TODO(masking branch): go_backwards maps to the recurrent key `go_backwards` once it lands.
    o.require("go_backwards", False, "reads the sequence backwards, which a spec recurrent layer cannot yet")


def recurrent(layer, notes: list[str]) -> dict:
    """SimpleRNN, LSTM, GRU -> simple_rnn, lstm, gru with the same keys."""
    kind = _CELL_KINDS[type(layer.cell)]
    o = Options(layer)
    _recurrent_options(o)
    doc = _cell_doc(layer.cell, kind, notes, o)
    doc["return_sequences"] = o["return_sequences"]
    o.finish(notes)
    return doc


def rnn(layer, notes: list[str]) -> dict:
    """keras.layers.RNN around one built-in or seqspec cell -> rnn with that cell."""
    o = Options(layer)
    _recurrent_options(o)
    o.used.add("cell")
    kind = _CELL_KINDS.get(type(layer.cell))
    if kind is None:
        what = "a stack of cells (StackedRNNCells)" if isinstance(layer.cell, keras.layers.StackedRNNCells) else f"the cell class {type(layer.cell).__name__}"
        raise s.ImportRefused(f"{_label(layer)}: {what} has no spec equivalent (cells: {', '.join(sorted(_CELL_KINDS.values()))})")
    doc = {"type": "rnn", "cell": _cell_doc(layer.cell, kind, notes), "return_sequences": o["return_sequences"]}
    o.finish(notes)
    return doc


def bidirectional(layer, notes: list[str]) -> dict:
    """Bidirectional(layer, merge_mode) -> bidirectional; a backward_layer must be the forward one reversed."""
    o = Options(layer)
    o.used.update(("layer", "backward_layer"))
    mode = o["merge_mode"]
    if mode not in ("concat", "sum", "mul", "ave"):
        raise s.ImportRefused(f"{_label(layer)}: merge_mode={mode!r} has no spec equivalent (concat, sum, mul, ave)")
    forward, backward = layer.forward_layer, layer.backward_layer
    reader = READERS.get(type(forward))
    if reader not in (recurrent, rnn):
        raise s.ImportRefused(f"{_label(layer)}: wraps {_label(forward)}, which a spec bidirectional cannot (simple_rnn, lstm, gru, rnn)")
    inner = reader(forward, notes)
    if not backward.get_config().get("go_backwards"):
        raise s.ImportRefused(f"{_label(layer)}: its backward_layer {backward.name!r} does not read backwards (go_backwards=False)")
    back = reader(_unreversed(backward), [])
    if back != inner:
        raise s.ImportRefused(f"{_label(layer)}: its backward_layer differs from the forward layer ({back} against {inner}); a spec bidirectional runs one layer both ways")
    o.finish(notes)
    return {"type": "bidirectional", "layer": inner, "merge_mode": mode}


class _unreversed:
    """A backward layer seen with go_backwards=False, to compare its options with the forward layer's."""

    def __init__(self, layer):
        self._layer = layer
        self.name, self.cell = layer.name, layer.cell

    def get_config(self):
        return {**self._layer.get_config(), "go_backwards": False}


def time_distributed(layer, notes: list[str]) -> dict:
    """TimeDistributed(Dense | Activation | Dropout) -> time_distributed of that layer."""
    o = Options(layer)
    o.used.add("layer")
    reader = READERS.get(type(layer.layer))
    if reader not in (dense, activation_layer, dropout):
        raise s.ImportRefused(f"{_label(layer)}: wraps {_label(layer.layer)}; a spec time_distributed wraps dense, activation or dropout")
    o.finish(notes)
    return {"type": "time_distributed", "layer": reader(layer.layer, notes)}


def dense(layer, notes: list[str]) -> dict:
    o = Options(layer)
    o.require("lora_rank", None, "(a LoRA adapter) has no spec equivalent")
    o.require("quantization_config", None, "(a quantized layer) has no spec equivalent")
    o.used.update(("lora_alpha", "activation"))
    doc = {"type": "dense", "units": o["units"], "activation": activation(layer.activation, layer), "use_bias": o["use_bias"]}
    o.finish(notes)
    return doc


def dropout(layer, notes: list[str]) -> dict:
    o = Options(layer)
    o.require("noise_shape", None, "(dropout shared along axes) has no spec equivalent")
    doc = {"type": "dropout", "rate": float(o["rate"])}
    o.finish(notes)
    return doc


def activation_layer(layer, notes: list[str]) -> dict:
    o = Options(layer)
    o.used.add("activation")
    doc = {"type": "activation", "activation": activation(layer.activation, layer)}
    o.finish(notes)
    return doc


def relu_layer(layer, notes: list[str]) -> dict:
    """keras.layers.ReLU with its defaults -> activation relu; with negative_slope -> leaky_relu."""
    o = Options(layer)
    o.require("max_value", None)
    o.require("threshold", 0.0)
    slope = float(o["negative_slope"])
    act = "relu" if slope == 0.0 else {"name": "leaky_relu", "negative_slope": slope}
    o.finish(notes)
    return {"type": "activation", "activation": act}


def leaky_relu_layer(layer, notes: list[str]) -> dict:
    o = Options(layer)
    slope = float(o["negative_slope"])
    o.finish(notes)
    return {"type": "activation", "activation": {"name": "leaky_relu", "negative_slope": slope}}


def softmax_layer(layer, notes: list[str]) -> dict:
    o = Options(layer)
    o.require("axis", (-1, len(layer.input.shape) - 1), "(softmax over another axis than the features) has no spec equivalent")
    o.finish(notes)
    return {"type": "activation", "activation": "softmax"}


def elu_layer(layer, notes: list[str]) -> dict:
    o = Options(layer)
    o.require("alpha", 1.0)
    o.finish(notes)
    return {"type": "activation", "activation": "elu"}


def _feature_axis(o: Options, layer, key: str = "axis") -> None:
    axis = o[key]
    rank = len(layer.input.shape)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1 or axes[0] not in (-1, rank - 1):
        raise s.ImportRefused(f"{_label(layer)}: {key}={axis!r} normalises another axis than the features (the spec's normalise the last axis)")


def batch_norm(layer, notes: list[str]) -> dict:
    o = Options(layer)
    _feature_axis(o, layer)
    o.require("renorm", False, "(batch renormalisation) has no spec equivalent")
    o.used.update(("renorm_clipping", "renorm_momentum", "center", "scale"))
    doc = {"type": "batch_norm", "momentum": float(o["momentum"]), "epsilon": float(o["epsilon"])}
    o.finish(notes)
    return doc


def layer_norm(layer, notes: list[str]) -> dict:
    o = Options(layer)
    _feature_axis(o, layer)
    o.require("rms_scaling", False, "(RMS normalisation) has no spec equivalent")
    o.used.update(("center", "scale"))
    doc = {"type": "layer_norm", "epsilon": float(o["epsilon"])}
    o.finish(notes)
    return doc


def _channels_last(o: Options) -> None:
    o.require("data_format", ("channels_last", None), "(channels first) has no spec equivalent: spec tensors are channels-last")


def _one(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def conv1d(layer, notes: list[str]) -> dict:
    o = Options(layer)
    _channels_last(o)
    o.require("lora_rank", None, "(a LoRA adapter) has no spec equivalent")
    o.used.update(("lora_alpha", "activation"))
    doc = {
        "type": "conv1d",
        "filters": o["filters"],
        "kernel_size": _one(o["kernel_size"]),
        "strides": _one(o["strides"]),
        "padding": o["padding"],
        "dilation_rate": _one(o["dilation_rate"]),
        "groups": o["groups"],
        "activation": activation(layer.activation, layer),
        "use_bias": o["use_bias"],
    }
    o.finish(notes)
    return doc


def _pool(kind: str) -> Callable:
    def read(layer, notes: list[str]) -> dict:
        o = Options(layer)
        _channels_last(o)
        size = _one(o["pool_size"])
        strides = _one(o["strides"])
        doc = {"type": kind, "pool_size": size, "padding": o["padding"]}
        if strides is not None and strides != size:
            doc["strides"] = strides
        o.finish(notes)
        return doc

    read.__doc__ = f"{kind}: pool_size, strides (None is pool_size), padding."
    return read


def _global_pool(kind: str) -> Callable:
    def read(layer, notes: list[str]) -> dict:
        o = Options(layer)
        _channels_last(o)
        o.require("keepdims", False, "keeps the time axis; a spec global pool gives [batch, features]")
        o.finish(notes)
        return {"type": kind}

    read.__doc__ = f"{kind}: no keys."
    return read


def flatten(layer, notes: list[str]) -> dict:
    o = Options(layer)
    _channels_last(o)
    o.finish(notes)
    return {"type": "flatten"}


def repeat_vector(layer, notes: list[str]) -> dict:
    o = Options(layer)
    doc = {"type": "repeat_vector", "n": o["n"]}
    o.finish(notes)
    return doc


def _pair(value) -> Any:
    value = list(value) if isinstance(value, (list, tuple)) else value
    return value[0] if isinstance(value, list) and value[0] == value[1] else value


def zero_padding1d(layer, notes: list[str]) -> dict:
    o = Options(layer)
    _channels_last(o)
    doc = {"type": "zero_padding1d", "padding": _pair(o["padding"])}
    o.finish(notes)
    return doc


def cropping1d(layer, notes: list[str]) -> dict:
    o = Options(layer)
    doc = {"type": "cropping1d", "cropping": _pair(o["cropping"])}
    o.finish(notes)
    return doc


def upsampling1d(layer, notes: list[str]) -> dict:
    o = Options(layer)
    doc = {"type": "upsampling1d", "size": o["size"]}
    o.finish(notes)
    return doc


def wavenet(layer, notes: list[str]) -> dict:
    """seqspec's WaveNet layer -> wavenet; its rates written as the shortest dilation_rates repeated."""
    o = Options(layer)
    rates = list(o["rates"])
    period = next(p for p in range(1, len(rates) + 1) if len(rates) % p == 0 and rates == rates[:p] * (len(rates) // p))
    o.used.add("activation")
    doc = {"type": "wavenet", "filters": o["filters"], "kernel_size": o["kernel_size"], "dilation_rates": rates[:period], "repeats": len(rates) // period, "gated": o["gated"]}
    if not doc["gated"]:
        doc["activation"] = activation(layer.activation, layer)
    o.finish(notes)
    return doc


def masking(layer, notes: list[str]) -> dict:
    o = Options(layer)
    doc = {"type": "masking", "mask_value": float(o["mask_value"])}
    o.finish(notes)
    return doc


def embedding(layer, notes: list[str]) -> dict:
    o = Options(layer)
    o.require("lora_rank", None, "(a LoRA adapter) has no spec equivalent")
    o.require("quantization_config", None, "(a quantized layer) has no spec equivalent")
    o.require("sparse", False, "(sparse gradients) has no spec equivalent")
    o.used.update(("lora_alpha", "input_length"))
    doc = {"type": "embedding", "input_dim": int(o["input_dim"]), "output_dim": int(o["output_dim"]), "mask_zero": bool(o["mask_zero"])}
    o.finish(notes)
    return doc


# Each Keras layer class to its reader.
READERS: dict[type, Callable] = {
    keras.layers.Masking: masking,
    keras.layers.Embedding: embedding,
    keras.layers.SimpleRNN: recurrent,
    keras.layers.LSTM: recurrent,
    keras.layers.GRU: recurrent,
    keras.layers.RNN: rnn,
    keras.layers.Bidirectional: bidirectional,
    keras.layers.TimeDistributed: time_distributed,
    keras.layers.Dense: dense,
    keras.layers.Dropout: dropout,
    keras.layers.Activation: activation_layer,
    keras.layers.ReLU: relu_layer,
    keras.layers.LeakyReLU: leaky_relu_layer,
    keras.layers.Softmax: softmax_layer,
    keras.layers.ELU: elu_layer,
    keras.layers.BatchNormalization: batch_norm,
    keras.layers.LayerNormalization: layer_norm,
    keras.layers.Conv1D: conv1d,
    keras.layers.MaxPooling1D: _pool("max_pool1d"),
    keras.layers.AveragePooling1D: _pool("avg_pool1d"),
    keras.layers.GlobalMaxPooling1D: _global_pool("global_max_pool1d"),
    keras.layers.GlobalAveragePooling1D: _global_pool("global_avg_pool1d"),
    keras.layers.Flatten: flatten,
    keras.layers.RepeatVector: repeat_vector,
    keras.layers.ZeroPadding1D: zero_padding1d,
    keras.layers.Cropping1D: cropping1d,
    keras.layers.UpSampling1D: upsampling1d,
    WaveNet: wavenet,
}


# --- weights -----------------------------------------------------------------------------------


def _norm_weights(node, layer, prefix: str) -> dict[str, np.ndarray]:
    """BatchNormalization / LayerNormalization: gamma and beta are ones and zeros where scale or center is off."""
    f = layer.input.shape[-1]
    dtype = keras.backend.standardize_dtype(layer.variable_dtype)
    out = {
        prefix + "gamma": np.asarray(layer.gamma.numpy()) if layer.gamma is not None else np.ones(f, dtype),
        prefix + "beta": np.asarray(layer.beta.numpy()) if layer.beta is not None else np.zeros(f, dtype),
    }
    if isinstance(node, s.BatchNorm):
        out[prefix + "moving_mean"] = np.asarray(layer.moving_mean.numpy())
        out[prefix + "moving_variance"] = np.asarray(layer.moving_variance.numpy())
    return out


def layer_weights(node, layer, prefix: str) -> dict[str, np.ndarray]:
    """The canonical arrays of one node, read from the user's Keras layer through the backend's own Bindings."""
    if isinstance(node, (s.BatchNorm, s.LayerNorm)):
        return _norm_weights(node, layer, prefix)
    if isinstance(node, s.TimeDistributed) and isinstance(layer, keras.layers.TimeDistributed):
        return layer_weights(node.layer, layer.layer, prefix)
    out: dict[str, np.ndarray] = {}
    for binding in bindings(node, layer, prefix):
        out.update(binding.split(np.asarray(binding.variable.numpy())))
    return out


# --- the model ---------------------------------------------------------------------------------


def _is_model(layer) -> bool:
    return isinstance(layer, keras.Model)


def _chain(model, where: str = "") -> list:
    """The layers of a model that is a chain (Sequential, or a functional model with one input, one
    output and each layer applied once to the previous one's output), nested models flattened."""
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    else:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise s.ImportRefused(f"model {model.name!r}: has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a spec is one chain from one input to one output")
        layers = []
        tensor = model.outputs[0]
        while tensor is not model.inputs[0]:
            op, node_index, _ = tensor._keras_history
            node = op._inbound_nodes[node_index]
            inputs = list(node.input_tensors)
            if len(inputs) > 1:
                # The mask a layer receives is an input of its node too (keyword `mask`): the chain
                # follows the positional one. The mask itself comes from the spec's own layers.
                positional = [t for t in keras.tree.flatten(node.arguments.args) if isinstance(t, keras.KerasTensor)]
                masks = [t for t in keras.tree.flatten(node.arguments.kwargs.get("mask")) if isinstance(t, keras.KerasTensor)]
                if len(positional) == 1 and len(positional) + len(masks) == len(inputs):
                    inputs = positional
            if len(inputs) != 1:
                raise s.ImportRefused(f"{_label(op)}: takes {len(inputs)} inputs; a spec is one chain (no merges, skips or branches)")
            if isinstance(op, keras.layers.InputLayer):
                break
            layers.append(op)
            tensor = inputs[0]
        layers.reverse()
    seen: set[int] = set()
    out = []
    for layer in layers:
        if id(layer) in seen:
            raise s.ImportRefused(f"{_label(layer)}: applied more than once (shared weights); a spec layer has its own weights")
        seen.add(id(layer))
        if not isinstance(layer, keras.layers.Layer):
            raise s.ImportRefused(f"operation {getattr(layer, 'name', '?')!r} ({type(layer).__name__}): has no spec equivalent; a spec is a chain of layers")
        out += _chain(layer) if _is_model(layer) else [layer]
    if not isinstance(model, keras.Sequential):
        users = {}
        for layer in model.layers:
            if not isinstance(layer, keras.layers.InputLayer) and id(layer) not in seen and not _is_model(layer):
                users[layer.name] = layer
        if users:
            name, layer = next(iter(users.items()))
            raise s.ImportRefused(f"{_label(layer)}: is not on the chain from the input to the output; a spec is one chain")
    return out


def _input_shape(model, input_shape: Optional[list], tokens: bool = False) -> list:
    shape = list(model.inputs[0].shape[1:])
    if input_shape is not None:
        given = list(input_shape)
        if len(given) != len(shape) or any(g != m and m is not None for g, m in zip(given, shape)):
            raise s.ImportRefused(f"--input-shape {given}: the model {model.name!r} takes {shape}")
        shape = given
    if tokens:
        if len(shape) != 1:
            raise s.ImportRefused(f"model {model.name!r}: its integer input {[None] + shape} is not [batch, time] of token ids")
        return shape
    if not 1 <= len(shape) <= 2 or shape[-1] is None:
        raise s.ImportRefused(f"model {model.name!r}: its input {[None] + shape} is not [batch, time, features] or [batch, features] with known features")
    return shape


def _inexact_in_float64(layers: list) -> Optional[str]:
    """Why the model's float64 twin would not compute its function exactly, or None: Keras's own gelu
    and leaky_relu run on TensorFlow's float32 constants even in float64 (gelu measured 5e-9 off on
    [-4, 4]; a slope is rounded to float32), so the twin, not the spec, would miss the 1e-9 tolerance."""
    for layer in layers:
        parts = [layer]
        for name in ("cell", "layer", "forward_layer"):
            inner = getattr(layer, name, None)
            if inner is not None:
                parts += [inner, getattr(inner, "cell", None)]
        for part in parts:
            if part is None:
                continue
            for key in ("activation", "recurrent_activation"):
                fn = getattr(part, key, None)
                if fn is keras.activations.gelu:
                    return f"{_label(layer)} uses Keras's gelu, whose float64 form is 5e-9 off (TensorFlow's float32 constants)"
                if fn is keras.activations.leaky_relu:
                    return f"{_label(layer)} uses Keras's leaky_relu, whose slope 0.2 TensorFlow rounds to float32"
        slope = getattr(layer, "negative_slope", None) if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.ReLU)) else None
        if slope and float(np.float32(slope)) != float(slope):
            return f"{_label(layer)} has negative_slope {slope}, which TensorFlow rounds to float32 in float64"
    return None


def _float64_copy(model) -> Optional[keras.Model]:
    """The same model with every layer in float64 and the same weights, or None when Keras cannot rebuild it from its config."""

    def widen(value):
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy":
                return {**value, "config": {**value["config"], "name": "float64"}}
            return {k: ("float64" if k == "dtype" and v == "float32" else widen(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [widen(v) for v in value]
        return value

    try:
        config = widen(model.get_config())
        wide = type(model).from_config(config)
        wide.set_weights([np.asarray(w, dtype=np.float64) if np.asarray(w).dtype == np.float32 else w for w in model.get_weights()])
    except Exception:  # a config Keras cannot rebuild: the proof runs in float32 only
        return None
    layers = _chain(wide)
    first = layers[0].dtype_policy.compute_dtype if layers else wide.inputs[0].dtype
    if keras.backend.standardize_dtype(first) != "float64":  # token ids stay integers; the layers must widen
        return None
    return wide


def _runner(model) -> Callable[[np.ndarray], np.ndarray]:
    """The model in inference mode as a function of NumPy inputs, traced once for any batch size.

    Once per length too where the model holds a keras.layers.TimeDistributed: traced for an unknown
    length it mixes the batch and time axes (see _builders.time_distributed); for a known one it
    does not.
    """
    import tensorflow as tf

    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    per_length = any(isinstance(layer, keras.layers.TimeDistributed) for layer in _chain(model))
    features = tuple(model.inputs[0].shape[1:])
    traced: dict = {}

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=dtype)
        key = x.shape[1] if per_length and x.ndim == 3 else None
        if key not in traced:
            shape = (None,) + ((key,) + features[1:] if key is not None else features)
            traced[key] = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec(shape, dtype)])
        return np.asarray(traced[key](tf.convert_to_tensor(x)).numpy())

    return run


def load(path: str) -> keras.Model:
    """A .keras or .h5 file, loaded by Keras (safe mode: no Lambda code); one line for what Keras refuses."""
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises TypeError, ValueError, OSError ... with multi-line messages
        text = " ".join(str(e).split())
        if "Could not locate class" in text:
            start = text.index("Could not locate class")
            text = text[start : start + 200].split(". ")[0]
            text += " (a custom layer: it has no spec equivalent, or register it before importing)"
        raise s.ImportRefused(f"{path}: Keras cannot load it: {text[:300]}") from None
    if not isinstance(model, keras.Model):
        raise s.ImportRefused(f"{path}: holds a {type(model).__name__}, not a keras.Model")
    return model


def read_model(source, input_shape: Optional[list] = None) -> s.Imported:
    """A keras.Model (or a .keras/.h5 path) as a seqspec.Imported: spec layer documents, canonical
    weights, and the original as functions of NumPy inputs in float32 (and float64 where Keras can
    rebuild it so)."""
    model = load(source) if isinstance(source, (str, os.PathLike)) else source
    if not model.built or not getattr(model, "inputs", None):
        if input_shape is None:
            raise s.ImportRefused(f"model {model.name!r}: is not built; give its input shape (--input-shape TIME,FEATURES)")
        model(keras.Input(shape=tuple(input_shape)))
    policy = keras.backend.standardize_dtype(model.inputs[0].dtype)
    layers = _chain(model)
    if not layers:
        raise s.ImportRefused(f"model {model.name!r}: has no layers")
    input_dtype = None
    if policy in ("int32", "int64"):  # token ids: the model computes in its first layer's dtype
        input_dtype = policy
        policy = keras.backend.standardize_dtype(layers[0].dtype_policy.compute_dtype)
    if policy not in ("float32", "float64"):
        raise s.ImportRefused(f"model {model.name!r}: its input is {policy}: import reads float32 and float64 models, and int32 or int64 token ids")
    shape = _input_shape(model, input_shape, tokens=input_dtype is not None)
    notes: list[str] = []
    docs = []
    for layer in layers:
        dtype = keras.backend.standardize_dtype(layer.dtype_policy.compute_dtype)
        if dtype != policy or keras.backend.standardize_dtype(layer.dtype_policy.variable_dtype) != policy:
            raise s.ImportRefused(f"{_label(layer)}: computes in {dtype}, the model's input is {policy}; a spec model has one dtype")
        reader = READERS.get(type(layer))
        if reader is None:
            raise s.ImportRefused(f"{_label(layer)}: has no spec equivalent (the layers that map are listed in docs/import.md)")
        docs.append(reader(layer, notes))
    given = {"shape": shape, **({"dtype": input_dtype} if input_dtype else {})}
    doc = {"seqspec": 1, "name": "imported", "dtype": policy, "input": given, "layers": docs}
    try:
        spec = s.load(json.dumps(doc))
    except s.SpecError as e:
        raise s.ImportRefused(f"model {model.name!r}: its layers do not make a valid spec: {str(e).splitlines()[0].partition(': ')[2]}") from None
    weights: dict[str, np.ndarray] = {}
    for i, (node, layer) in enumerate(zip(spec.layers, layers)):
        weights.update(layer_weights(node, layer, f"layers.{i}."))
    run = {policy: _runner(model)}
    inexact = _inexact_in_float64(layers)
    if policy == "float32" and inexact:
        notes.append(f"the float64 proof is skipped: {inexact}")
    elif policy == "float32":
        wide = _float64_copy(model)
        if wide is not None:
            run["float64"] = _runner(wide)
    return s.Imported(name=s.spec_name(model.name), input_shape=shape, layers=docs, weights=weights, run=run, dtype=policy, notes=notes, input_dtype=input_dtype)
