"""Mappings between the canonical weight layout and the torch modules' parameters, one function per node type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import seqspec as s
from seqspec import GRU_GATES, LSTM_GATES, PEEPHOLES

from ._builders import BACKEND_NAME
from ._cells import CANONICAL_TO_TORCH_GRU, TORCH_GRU_GATES, TORCH_LSTM_GATES

# How a canonical array relates to the torch tensor it lives in.
COPY = "copy"  # same shape
TRANSPOSE = "transpose"  # canonical [in, out] <-> torch (out, in)
CONV = "conv"  # canonical kernel [k, in, filters] <-> torch (filters, in, k)


@dataclass(frozen=True)
class Binding:
    """One canonical array: the torch tensor holding it, the rows of a gate stack it takes, how it is laid out."""

    name: str
    tensor: torch.Tensor
    rows: Optional[slice] = None
    kind: str = COPY

    def _to_canonical(self, t: torch.Tensor) -> torch.Tensor:
        t = t if self.rows is None else t[self.rows]
        if self.kind == TRANSPOSE:
            return t.T
        if self.kind == CONV:
            return t.permute(2, 1, 0)
        return t

    def get(self) -> torch.Tensor:
        """The canonical array (a view of the tensor)."""
        return self._to_canonical(self.tensor.detach())

    def grad(self) -> Optional[torch.Tensor]:
        """The canonical array's gradient, or None when it has none."""
        g = self.tensor.grad
        return None if g is None else self._to_canonical(g)

    def set(self, value: torch.Tensor) -> None:
        """Copy a canonical array in."""
        with torch.no_grad():
            self.get().copy_(value)  # get() is a view: writing it writes the tensor

    @property
    def trainable(self) -> bool:
        return isinstance(self.tensor, torch.nn.Parameter) and self.tensor.requires_grad


def _rows(k: int, units: int) -> slice:
    return slice(k * units, (k + 1) * units)


def simple_rnn_map(node, cell, prefix: str) -> list[Binding]:
    """kernel [in, units] <-> weight_ih (units, in); recurrent_kernel [units, units] <-> weight_hh
    (units, units), transposed; bias [units] <-> bias_ih (units,). The zero bias_hh is no array."""
    w_ih, w_hh, b_ih, _ = cell.tensors()
    out = [Binding(prefix + "kernel", w_ih, kind=TRANSPOSE), Binding(prefix + "recurrent_kernel", w_hh, kind=TRANSPOSE)]
    if node.use_bias:
        out.append(Binding(prefix + "bias", b_ih))
    return out


def ln_simple_rnn_map(node, cell, prefix: str) -> list[Binding]:
    """As simple_rnn_map, plus gamma, beta [units] <-> gamma, beta (units,)."""
    return simple_rnn_map(node, cell, prefix) + [Binding(prefix + "gamma", cell.gamma), Binding(prefix + "beta", cell.beta)]


def lstm_map(node, cell, prefix: str) -> list[Binding]:
    """kernel_{g} [in, units] <-> rows g of weight_ih (4*units, in); recurrent_kernel_{g} [units, units]
    <-> rows g of weight_hh (4*units, units); bias_{g} [units] <-> rows g of bias_ih (4*units,).
    Gate rows in TORCH_LSTM_GATES order (i, f, g, o), the canonical names' order too."""
    w_ih, w_hh, b_ih, _ = cell.tensors()
    u = node.units
    rows = {g: _rows(TORCH_LSTM_GATES.index(g), u) for g in LSTM_GATES}
    out = [Binding(f"{prefix}kernel_{g}", w_ih, rows[g], TRANSPOSE) for g in LSTM_GATES]
    out += [Binding(f"{prefix}recurrent_kernel_{g}", w_hh, rows[g], TRANSPOSE) for g in LSTM_GATES]
    if node.use_bias:
        out += [Binding(f"{prefix}bias_{g}", b_ih, rows[g]) for g in LSTM_GATES]
    return out


def peephole_lstm_map(node, cell, prefix: str) -> list[Binding]:
    """As lstm_map, plus peephole_{i,f,o} [units] <-> peephole_{i,f,o} (units,)."""
    return lstm_map(node, cell, prefix) + [Binding(f"{prefix}peephole_{g}", getattr(cell, f"peephole_{g}")) for g in PEEPHOLES]


def gru_map(node, cell, prefix: str) -> list[Binding]:
    """kernel_{z,r,g} [in, units] <-> rows z, r, n of weight_ih (3*units, in), rows in TORCH_GRU_GATES
    order (r, z, n); recurrent_kernel_{z,r,g} likewise of weight_hh (3*units, units); bias_{z,r,g}
    [units] <-> rows of bias_ih (3*units,); recurrent_bias_{z,r,g} [units] <-> rows of bias_hh
    (3*units,), with reset_after only."""
    w_ih, w_hh, b_ih, b_hh = cell.tensors()
    u = node.units
    rows = {g: _rows(TORCH_GRU_GATES.index(CANONICAL_TO_TORCH_GRU[g]), u) for g in GRU_GATES}
    out = [Binding(f"{prefix}kernel_{g}", w_ih, rows[g], TRANSPOSE) for g in GRU_GATES]
    out += [Binding(f"{prefix}recurrent_kernel_{g}", w_hh, rows[g], TRANSPOSE) for g in GRU_GATES]
    if node.use_bias:
        out += [Binding(f"{prefix}bias_{g}", b_ih, rows[g]) for g in GRU_GATES]
        if node.reset_after:
            out += [Binding(f"{prefix}recurrent_bias_{g}", b_hh, rows[g]) for g in GRU_GATES]
    return out


def recurrent_map(node, layer, prefix: str) -> list[Binding]:
    """simple_rnn, lstm, gru and rnn layers: the arrays of their cell (seqspec's `cell_node`), mapped by the cell's map."""
    return bindings(node.cell_node, layer.cell, prefix)


def bidirectional_map(node, layer, prefix: str) -> list[Binding]:
    """forward.* and backward.*: the wrapped layer's arrays, once per direction."""
    inner = node.layer
    return recurrent_map(inner, layer.forward_layer, prefix + "forward.") + recurrent_map(
        inner, layer.backward_layer, prefix + "backward."
    )


def dense_map(node, layer, prefix: str) -> list[Binding]:
    """kernel [in, units] <-> linear.weight (units, in); bias [units] <-> linear.bias (units,)."""
    out = [Binding(prefix + "kernel", layer.linear.weight, kind=TRANSPOSE)]
    if node.use_bias:
        out.append(Binding(prefix + "bias", layer.linear.bias))
    return out


def time_distributed_map(node, layer, prefix: str) -> list[Binding]:
    """The inner layer's arrays under the same prefix."""
    return bindings(node.layer, layer.layer, prefix)


def batch_norm_map(node, layer, prefix: str) -> list[Binding]:
    """gamma, beta [F] <-> weight, bias (F,); moving_mean, moving_variance [F] <-> the buffers
    running_mean, running_var (F,)."""
    return [
        Binding(prefix + "gamma", layer.weight),
        Binding(prefix + "beta", layer.bias),
        Binding(prefix + "moving_mean", layer.running_mean),
        Binding(prefix + "moving_variance", layer.running_var),
    ]


def layer_norm_map(node, layer, prefix: str) -> list[Binding]:
    """gamma, beta [F] <-> norm.weight, norm.bias (F,)."""
    return [Binding(prefix + "gamma", layer.norm.weight), Binding(prefix + "beta", layer.norm.bias)]


def _conv(conv, prefix: str) -> list[Binding]:
    out = [Binding(prefix + "kernel", conv.conv.weight, kind=CONV)]
    if conv.conv.bias is not None:
        out.append(Binding(prefix + "bias", conv.conv.bias))
    return out


def conv1d_map(node, layer, prefix: str) -> list[Binding]:
    """kernel [kernel_size, in / groups, filters] <-> conv.weight (filters, in / groups, kernel_size); bias [filters] <-> conv.bias."""
    return _conv(layer, prefix)


def wavenet_map(node, layer, prefix: str) -> list[Binding]:
    """{conv name}.kernel [k, in, out] <-> convs[j].conv.weight (out, in, k), and .bias, in the
    order of seqspec.WaveNet.convolutions."""
    out = []
    for conv, module in zip(node.convolutions(0), layer.convs):
        out += _conv(module, f"{prefix}{conv.name}.")
    return out


def embedding_map(node, layer, prefix: str) -> list[Binding]:
    """embeddings [input_dim, output_dim] <-> embedding.weight (input_dim, output_dim), as it is."""
    return [Binding(prefix + "embeddings", layer.embedding.weight)]


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
        s.SimpleRNN: recurrent_map,
        s.LSTM: recurrent_map,
        s.GRU: recurrent_map,
        s.RNN: recurrent_map,
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


def bindings(node, module, prefix: str, where: str = "") -> list[Binding]:
    """The Bindings of one node's arrays in its module, through WEIGHT_MAPS (none for a node type without arrays)."""
    if not s.has_arrays(node):
        return []
    return WEIGHT_MAPS.lookup(node, where)(node, module, prefix)


def model_bindings(model, spec) -> list[Binding]:
    """Every canonical array of a built model, in layer order."""
    out = []
    for i, (node, layer) in enumerate(zip(spec.layers, model.layers)):
        out += bindings(node, layer, f"layers.{i}.", spec.locate("layers", i))
    # A mapping that forgot or invented an array would let two backends silently differ.
    names = [b.name for b in out]
    if sorted(names) != sorted(s.layout(spec)):
        raise s.BackendError(f"torch backend: the weight mappings give {len(names)} arrays, the layout of {spec.name!r} has {len(s.layout(spec))}")
    return out
