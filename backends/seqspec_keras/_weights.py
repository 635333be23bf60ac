"""Weight mappings between Keras variables and the canonical layout, one small function per node type.

Every Keras variable here holds canonical arrays concatenated along its last axis (a gate
order), stacked along a new first axis for Keras GRU's reset_after bias only. A mapping
function says which, as a list of Bindings; reading, writing and gradients all go through the
same Bindings, so the three cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

import seqspec as s

from ._builders import BACKEND_NAME, layer_name

# Keras's gate order inside its concatenated kernels, and the canonical name of each gate.
KERAS_LSTM_GATES = ("i", "f", "c", "o")
KERAS_GRU_GATES = ("z", "r", "h")
CANONICAL_GATE = {"i": "i", "f": "f", "c": "g", "o": "o", "z": "z", "r": "r", "h": "g"}


@dataclass(frozen=True)
class Binding:
    """One Keras variable and the canonical arrays it holds.

    The variable is `rows` stacked along a new first axis (two rows only for Keras GRU's
    reset_after bias; one row means no stacking), each row the concatenation of its canonical
    arrays along the last axis.
    """

    variable: keras.Variable
    rows: tuple[tuple[str, ...], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for row in self.rows for name in row)

    def split(self, value: np.ndarray) -> dict[str, np.ndarray]:
        """The canonical arrays in a value (or gradient) of the variable's shape."""
        out = {}
        row_values = [value] if len(self.rows) == 1 else list(value)
        for row, row_value in zip(self.rows, row_values):
            out.update(zip(row, np.split(row_value, len(row), axis=-1)))
        return out

    def join(self, canonical: dict[str, np.ndarray]) -> np.ndarray:
        """The variable's value made of the canonical arrays."""
        row_values = [np.concatenate([canonical[name] for name in row], axis=-1) for row in self.rows]
        return row_values[0] if len(self.rows) == 1 else np.stack(row_values)


def _one(variable, name: str) -> Binding:
    return Binding(variable, ((name,),))


def _gated(variable, prefix: str, keras_gates: tuple[str, ...]) -> Binding:
    return Binding(variable, (tuple(f"{prefix}_{CANONICAL_GATE[g]}" for g in keras_gates),))


# --- recurrent cells (a recurrent layer maps through its .cell) ---------------------------------


def simple_rnn_map(node, cell, prefix: str) -> list[Binding]:
    """SimpleRNNCell: kernel [in, units], recurrent_kernel [units, units], bias [units]
    <-> the canonical arrays of the same names and shapes."""
    out = [_one(cell.kernel, prefix + "kernel"), _one(cell.recurrent_kernel, prefix + "recurrent_kernel")]
    if node.use_bias:
        out.append(_one(cell.bias, prefix + "bias"))
    return out


def ln_simple_rnn_map(node, cell, prefix: str) -> list[Binding]:
    """LNSimpleRNNCell: simple_rnn's arrays plus gamma [units], beta [units] <-> the same names."""
    return simple_rnn_map(node, cell, prefix) + [_one(cell.gamma, prefix + "gamma"), _one(cell.beta, prefix + "beta")]


def lstm_map(node, cell, prefix: str) -> list[Binding]:
    """LSTMCell: kernel [in, 4*units], recurrent_kernel [units, 4*units], bias [4*units], gates (i|f|c|o)
    <-> kernel_{i,f,g,o} [in, units], recurrent_kernel_{i,f,g,o} [units, units], bias_{i,f,g,o} [units]."""
    out = [
        _gated(cell.kernel, prefix + "kernel", KERAS_LSTM_GATES),
        _gated(cell.recurrent_kernel, prefix + "recurrent_kernel", KERAS_LSTM_GATES),
    ]
    if node.use_bias:
        out.append(_gated(cell.bias, prefix + "bias", KERAS_LSTM_GATES))
    return out


def peephole_lstm_map(node, cell, prefix: str) -> list[Binding]:
    """PeepholeLSTMCell: lstm's arrays plus peephole_i, peephole_f, peephole_o [units] <-> the same names."""
    peepholes = [_one(cell.peephole_i, prefix + "peephole_i"), _one(cell.peephole_f, prefix + "peephole_f")]
    return lstm_map(node, cell, prefix) + peepholes + [_one(cell.peephole_o, prefix + "peephole_o")]


def gru_map(node, cell, prefix: str) -> list[Binding]:
    """GRUCell: kernel [in, 3*units], recurrent_kernel [units, 3*units], gates (z|r|h), bias [3*units]
    (reset_after false) or [2, 3*units] (reset_after true: row 0 input bias, row 1 recurrent bias)
    <-> kernel_{z,r,g} [in, units], recurrent_kernel_{z,r,g} [units, units], bias_{z,r,g} [units]
    and, with reset_after, recurrent_bias_{z,r,g} [units]."""
    out = [
        _gated(cell.kernel, prefix + "kernel", KERAS_GRU_GATES),
        _gated(cell.recurrent_kernel, prefix + "recurrent_kernel", KERAS_GRU_GATES),
    ]
    if node.use_bias:
        bias = _gated(cell.bias, prefix + "bias", KERAS_GRU_GATES)
        if node.reset_after:
            recurrent_bias = _gated(cell.bias, prefix + "recurrent_bias", KERAS_GRU_GATES)
            bias = Binding(cell.bias, bias.rows + recurrent_bias.rows)
        out.append(bias)
    return out


def _through_cell(cell_map: Callable) -> Callable:
    """The map of a recurrent layer (SimpleRNN, LSTM, GRU) from its cell's map."""

    def layer_map(node, layer, prefix: str) -> list[Binding]:
        return cell_map(node, layer.cell, prefix)

    layer_map.__doc__ = f"The layer's .cell, mapped by {cell_map.__name__}."
    return layer_map


def rnn_map(node: s.RNN, layer, prefix: str) -> list[Binding]:
    """keras.layers.RNN: its .cell, mapped by the cell's own map, under the same prefix."""
    return bindings(node.cell, layer.cell, prefix)


def bidirectional_map(node: s.Bidirectional, layer, prefix: str) -> list[Binding]:
    """Bidirectional: forward_layer -> `forward.*`, backward_layer -> `backward.*`, each as the wrapped layer."""
    return bindings(node.layer, layer.forward_layer, prefix + "forward.") + bindings(node.layer, layer.backward_layer, prefix + "backward.")


# --- feed-forward and convolutional layers -----------------------------------------------------


def dense_map(node: s.Dense, layer, prefix: str) -> list[Binding]:
    """Dense: kernel [in, units], bias [units] <-> the same names and shapes."""
    out = [_one(layer.kernel, prefix + "kernel")]
    if node.use_bias:
        out.append(_one(layer.bias, prefix + "bias"))
    return out


def time_distributed_map(node: s.TimeDistributed, layer, prefix: str) -> list[Binding]:
    """time_distributed: the per-step layer's arrays, under the same prefix (the builder uses the
    per-step Keras layer itself, see _builders.time_distributed)."""
    return bindings(node.layer, layer, prefix)


def batch_norm_map(node: s.BatchNorm, layer, prefix: str) -> list[Binding]:
    """BatchNormalization: gamma, beta, moving_mean, moving_variance [features] <-> the same names."""
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    return [_one(getattr(layer, name), prefix + name) for name in names]


def layer_norm_map(node: s.LayerNorm, layer, prefix: str) -> list[Binding]:
    """LayerNormalization: gamma, beta [features] <-> the same names."""
    return [_one(layer.gamma, prefix + "gamma"), _one(layer.beta, prefix + "beta")]


def _conv(layer, prefix: str, use_bias: bool = True) -> list[Binding]:
    out = [_one(layer.kernel, prefix + "kernel")]
    if use_bias:
        out.append(_one(layer.bias, prefix + "bias"))
    return out


def conv1d_map(node: s.Conv1D, layer, prefix: str) -> list[Binding]:
    """Conv1D: kernel [kernel_size, in / groups, filters], bias [filters] <-> the same names and shapes."""
    return _conv(layer, prefix, node.use_bias)


def wavenet_map(node: s.WaveNet, layer, prefix: str) -> list[Binding]:
    """WaveNet: input_conv -> `input.*`, dilated[j] -> `stack{j}_d{rate}.dilated.*`,
    residual[j] -> `stack{j}_d{rate}.residual.*`; each a Conv1D's kernel [k, in, out] and bias [out]."""
    out = _conv(layer.input_conv, prefix + "input.") if node.gated else []
    for j, rate in enumerate(node.rates):
        out += _conv(layer.dilated[j], f"{prefix}stack{j}_d{rate}.dilated.")
        if node.gated:
            out += _conv(layer.residual[j], f"{prefix}stack{j}_d{rate}.residual.")
    return out


def embedding_map(node: s.Embedding, layer, prefix: str) -> list[Binding]:
    """Embedding: embeddings [input_dim, output_dim] <-> the same name and shape."""
    return [_one(layer.embeddings, prefix + "embeddings")]


WEIGHT_MAPS: s.Table = s.Table(
    BACKEND_NAME,
    "weight mapping",
    "WEIGHT_MAPS",
    __name__,
    {
        s.SimpleRNNCell: simple_rnn_map,
        s.LSTMCell: lstm_map,
        s.GRUCell: gru_map,
        s.LNSimpleRNNCell: ln_simple_rnn_map,
        s.PeepholeLSTMCell: peephole_lstm_map,
        s.SimpleRNN: _through_cell(simple_rnn_map),
        s.LSTM: _through_cell(lstm_map),
        s.GRU: _through_cell(gru_map),
        s.RNN: rnn_map,
        s.Bidirectional: bidirectional_map,
        s.Dense: dense_map,
        s.TimeDistributed: time_distributed_map,
        s.BatchNorm: batch_norm_map,
        s.LayerNorm: layer_norm_map,
        s.Conv1D: conv1d_map,
        s.WaveNet: wavenet_map,
        s.Embedding: embedding_map,
    },
)


def bindings(node, layer, prefix: str, where: str = "") -> list[Binding]:
    """The Bindings of one node's arrays in its Keras layer, through WEIGHT_MAPS (none for a node type without arrays)."""
    if not s.has_arrays(node):
        return []
    return WEIGHT_MAPS.lookup(node, where)(node, layer, prefix)


def model_bindings(model: keras.Model, spec: s.Spec) -> list[Binding]:
    """Every Binding of the model, layer by layer (top-level Keras layer `layers.{i}` is spec layer i)."""
    out: list[Binding] = []
    for i, node in enumerate(spec.layers):
        out += bindings(node, model.get_layer(layer_name(i)), layer_name(i) + ".", spec.locate("layers", i))
    # A mapping that forgot a variable would let two backends silently differ.
    if sorted(id(b.variable) for b in out) != sorted(id(v) for v in model.weights):
        raise s.BackendError(
            f"keras backend: {len(out)} variables mapped, the model has {len(model.weights)}; "
            f"the model does not match spec {spec.name!r}"
        )
    return out


def get_weights(model: keras.Model, spec: s.Spec) -> dict[str, np.ndarray]:
    """Every canonical array, in the order of s.layout(spec), as NumPy in spec.dtype."""
    found: dict[str, np.ndarray] = {}
    for binding in model_bindings(model, spec):
        found.update(binding.split(np.asarray(binding.variable.numpy()).astype(spec.dtype, copy=False)))
    return {name: np.ascontiguousarray(found[name]) for name in s.layout(spec)}


def set_weights(model: keras.Model, spec: s.Spec, weights: dict[str, np.ndarray]) -> None:
    """Load canonical arrays (already checked against the layout) into the model."""
    for binding in model_bindings(model, spec):
        binding.variable.assign(binding.join(weights).astype(binding.variable.dtype))


def trainable_names(spec: s.Spec) -> list[str]:
    """Canonical names of the trainable arrays, in layout order."""
    return [a.name for layer in s.infer(spec).layers for a in layer.arrays if a.trainable]
