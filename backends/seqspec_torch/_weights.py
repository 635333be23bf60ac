"""Mappings between the canonical weight layout and the torch modules' parameters, one function per node type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from seqspec._weights import GRU_GATES, LSTM_GATES, PEEPHOLES, wavenet_conv_names

from ._cells import CANONICAL_TO_TORCH_GRU, TORCH_GRU_GATES, TORCH_LSTM_GATES

# How a canonical array relates to the torch tensor it lives in.
COPY = "copy"  # same shape
TRANSPOSE = "transpose"  # canonical [in, out] <-> torch (out, in)
CONV = "conv"  # canonical kernel [k, in, filters] <-> torch (filters, in, k)


@dataclass(frozen=True)
class Slot:
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


def simple_rnn_slots(node, cell, prefix: str) -> list[Slot]:
    """kernel [in, units] <-> weight_ih (units, in); recurrent_kernel [units, units] <-> weight_hh
    (units, units), transposed; bias [units] <-> bias_ih (units,). The zero bias_hh is no array."""
    w_ih, w_hh, b_ih, _ = cell.tensors()
    slots = [Slot(prefix + "kernel", w_ih, kind=TRANSPOSE), Slot(prefix + "recurrent_kernel", w_hh, kind=TRANSPOSE)]
    if node.use_bias:
        slots.append(Slot(prefix + "bias", b_ih))
    return slots


def ln_simple_rnn_slots(node, cell, prefix: str) -> list[Slot]:
    """As simple_rnn_slots, plus gamma, beta [units] <-> gamma, beta (units,)."""
    return simple_rnn_slots(node, cell, prefix) + [Slot(prefix + "gamma", cell.gamma), Slot(prefix + "beta", cell.beta)]


def lstm_slots(node, cell, prefix: str) -> list[Slot]:
    """kernel_{g} [in, units] <-> rows g of weight_ih (4*units, in); recurrent_kernel_{g} [units, units]
    <-> rows g of weight_hh (4*units, units); bias_{g} [units] <-> rows g of bias_ih (4*units,).
    Gate rows in TORCH_LSTM_GATES order (i, f, g, o), the canonical names' order too."""
    w_ih, w_hh, b_ih, _ = cell.tensors()
    u = node.units
    rows = {g: _rows(TORCH_LSTM_GATES.index(g), u) for g in LSTM_GATES}
    slots = [Slot(f"{prefix}kernel_{g}", w_ih, rows[g], TRANSPOSE) for g in LSTM_GATES]
    slots += [Slot(f"{prefix}recurrent_kernel_{g}", w_hh, rows[g], TRANSPOSE) for g in LSTM_GATES]
    if node.use_bias:
        slots += [Slot(f"{prefix}bias_{g}", b_ih, rows[g]) for g in LSTM_GATES]
    return slots


def peephole_lstm_slots(node, cell, prefix: str) -> list[Slot]:
    """As lstm_slots, plus peephole_{i,f,o} [units] <-> peephole_{i,f,o} (units,)."""
    return lstm_slots(node, cell, prefix) + [Slot(f"{prefix}peephole_{g}", getattr(cell, f"peephole_{g}")) for g in PEEPHOLES]


def gru_slots(node, cell, prefix: str) -> list[Slot]:
    """kernel_{z,r,g} [in, units] <-> rows z, r, n of weight_ih (3*units, in), rows in TORCH_GRU_GATES
    order (r, z, n); recurrent_kernel_{z,r,g} likewise of weight_hh (3*units, units); bias_{z,r,g}
    [units] <-> rows of bias_ih (3*units,); recurrent_bias_{z,r,g} [units] <-> rows of bias_hh
    (3*units,), with reset_after only."""
    w_ih, w_hh, b_ih, b_hh = cell.tensors()
    u = node.units
    rows = {g: _rows(TORCH_GRU_GATES.index(CANONICAL_TO_TORCH_GRU[g]), u) for g in GRU_GATES}
    slots = [Slot(f"{prefix}kernel_{g}", w_ih, rows[g], TRANSPOSE) for g in GRU_GATES]
    slots += [Slot(f"{prefix}recurrent_kernel_{g}", w_hh, rows[g], TRANSPOSE) for g in GRU_GATES]
    if node.use_bias:
        slots += [Slot(f"{prefix}bias_{g}", b_ih, rows[g]) for g in GRU_GATES]
        if node.reset_after:
            slots += [Slot(f"{prefix}recurrent_bias_{g}", b_hh, rows[g]) for g in GRU_GATES]
    return slots


CELL_SLOTS = {
    "simple_rnn": simple_rnn_slots,
    "lstm": lstm_slots,
    "gru": gru_slots,
    "ln_simple_rnn": ln_simple_rnn_slots,
    "peephole_lstm": peephole_lstm_slots,
}


def recurrent_layer_slots(node, layer, prefix: str) -> list[Slot]:
    """simple_rnn, lstm, gru and rnn layers: the arrays of their cell (see the *_slots above)."""
    cell_node = node.cell if node.type == "rnn" else node
    return CELL_SLOTS[cell_node.type](cell_node, layer.cell, prefix)


def bidirectional_slots(node, layer, prefix: str) -> list[Slot]:
    """forward.* and backward.*: the wrapped layer's arrays, once per direction."""
    inner = node.layer
    return recurrent_layer_slots(inner, layer.forward_layer, prefix + "forward.") + recurrent_layer_slots(
        inner, layer.backward_layer, prefix + "backward."
    )


def dense_slots(node, layer, prefix: str) -> list[Slot]:
    """kernel [in, units] <-> linear.weight (units, in); bias [units] <-> linear.bias (units,)."""
    slots = [Slot(prefix + "kernel", layer.linear.weight, kind=TRANSPOSE)]
    if node.use_bias:
        slots.append(Slot(prefix + "bias", layer.linear.bias))
    return slots


def time_distributed_slots(node, layer, prefix: str) -> list[Slot]:
    """The inner layer's arrays under the same prefix."""
    return WEIGHT_MAPS_BY_TYPE[node.layer.type](node.layer, layer.layer, prefix)


def no_slots(node, layer, prefix: str) -> list[Slot]:
    """A layer without weights."""
    return []


def batch_norm_slots(node, layer, prefix: str) -> list[Slot]:
    """gamma, beta [F] <-> weight, bias (F,); moving_mean, moving_variance [F] <-> the buffers
    running_mean, running_var (F,)."""
    return [
        Slot(prefix + "gamma", layer.weight),
        Slot(prefix + "beta", layer.bias),
        Slot(prefix + "moving_mean", layer.running_mean),
        Slot(prefix + "moving_variance", layer.running_var),
    ]


def layer_norm_slots(node, layer, prefix: str) -> list[Slot]:
    """gamma, beta [F] <-> norm.weight, norm.bias (F,)."""
    return [Slot(prefix + "gamma", layer.norm.weight), Slot(prefix + "beta", layer.norm.bias)]


def _conv_slots(conv, prefix: str) -> list[Slot]:
    slots = [Slot(prefix + "kernel", conv.conv.weight, kind=CONV)]
    if conv.conv.bias is not None:
        slots.append(Slot(prefix + "bias", conv.conv.bias))
    return slots


def conv1d_slots(node, layer, prefix: str) -> list[Slot]:
    """kernel [kernel_size, in, filters] <-> conv.weight (filters, in, kernel_size); bias [filters] <-> conv.bias."""
    return _conv_slots(layer, prefix)


def wavenet_slots(node, layer, prefix: str) -> list[Slot]:
    """{conv name}.kernel [k, in, out] <-> convs[j].conv.weight (out, in, k), and .bias, in the
    order of seqspec._weights.wavenet_conv_names."""
    slots = []
    for (name, *_), conv in zip(wavenet_conv_names(node), layer.convs):
        slots += _conv_slots(conv, f"{prefix}{name}.")
    return slots


WEIGHT_MAPS_BY_TYPE = {
    "simple_rnn": recurrent_layer_slots,
    "lstm": recurrent_layer_slots,
    "gru": recurrent_layer_slots,
    "rnn": recurrent_layer_slots,
    "bidirectional": bidirectional_slots,
    "dense": dense_slots,
    "time_distributed": time_distributed_slots,
    "flatten": no_slots,
    "repeat_vector": no_slots,
    "dropout": no_slots,
    "activation": no_slots,
    "batch_norm": batch_norm_slots,
    "layer_norm": layer_norm_slots,
    "conv1d": conv1d_slots,
    "max_pool1d": no_slots,
    "avg_pool1d": no_slots,
    "global_max_pool1d": no_slots,
    "global_avg_pool1d": no_slots,
    "wavenet": wavenet_slots,
}


def model_slots(model, spec) -> list[Slot]:
    """Every canonical array of a built model, in layer order."""
    slots = []
    for i, (node, layer) in enumerate(zip(spec.layers, model.layers)):
        slots += WEIGHT_MAPS_BY_TYPE[node.type](node, layer, f"layers.{i}.")
    return slots
