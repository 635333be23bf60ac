"""Recurrent cells, and the layers that run them over time: fused torch.nn kernels where torch can, a loop otherwise."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from seqspec import activation_name

from . import _distributed, _scan
from ._activations import activation_fn

# Gate order of the rows of torch's stacked weights, and of every cell here. The canonical
# layout (seqspec.LSTM_GATES, seqspec.GRU_GATES) names LSTM gates i, f, g, o too, and GRU gates z, r, g.
TORCH_LSTM_GATES = ("i", "f", "g", "o")
TORCH_GRU_GATES = ("r", "z", "n")
CANONICAL_TO_TORCH_GRU = {"z": "z", "r": "r", "g": "n"}


# The dtype of the ln_simple_rnn recurrence (see LNSimpleRNNCell.loop).
LN_RECURRENCE_DTYPE = torch.float64

# On the CPU, a GRU (reset_after) or peephole_lstm layer whose batch size times units is at
# most this trains through _scan's hand-written backward; above it, through nn.GRU (whose CPU
# backward is autograd over ~90 ops a step) or the step loop. Measured training steps, scan /
# the other: GRU 0.73-0.88 at B * units 1,024-2,048 and 1.05-1.37 at 4,096-8,192; peephole_lstm
# 0.59-0.66 at 640, 0.85-0.91 at 2,048, 0.98-1.11 at 4,096, 1.28-1.58 at 8,192
# (benchmarks/scan_vs_loop.py and one-off runs at the middle sizes; docs/performance.md): beyond, moving the saved gates through memory costs more than the
# dispatches the scan saves. The reset-before GRU's scan is faster at every size measured.
SCAN_MAX_SIZE = 2048


def _small_cpu_training(x: torch.Tensor, units: int, weight: torch.Tensor) -> bool:
    """Gradients wanted, on the CPU, batch size * units <= SCAN_MAX_SIZE."""
    return torch.is_grad_enabled() and weight.requires_grad and x.device.type == "cpu" and x.shape[0] * units <= SCAN_MAX_SIZE


def _default_gates(node) -> bool:
    """Whether a cell has the activations _scan's recurrences are written for (tanh, sigmoid)."""
    return activation_name(node.activation) == "tanh" and activation_name(node.recurrent_activation) == "sigmoid"

# --- shared pieces of the step loop -----------------------------------------------------------


def _project(x: torch.Tensor, weight_ih: torch.Tensor, bias: Optional[torch.Tensor], masks: Optional[torch.Tensor]) -> torch.Tensor:
    """The input part of every gate at every step, in one matmul.

    The loops walk its steps with `unbind(1)`, whose backward stacks the steps' gradients once:
    indexing `xp[:, t]` instead makes each step's backward write a full-size zero gradient
    (O(T^2) memory traffic: 2.9 s for an ln_simple_rnn(128) training step on [64, 500, 64]).

    x [B, T, F], weight_ih (G*units, F), bias (G*units,), masks None, [1, B, 1, F] (one mask for
    all gates) or [G, B, 1, F] (one per gate) -> [B, T, G*units].
    """
    if masks is None or masks.shape[0] == 1:
        return F.linear(x if masks is None else x * masks[0], weight_ih, bias)
    g = masks.shape[0]
    b, t, f = x.shape
    per_gate = torch.einsum("gbtf,guf->btgu", x.unsqueeze(0) * masks, weight_ih.view(g, -1, f)).reshape(b, t, -1)
    return per_gate if bias is None else per_gate + bias


def _recur(h: torch.Tensor, weight_hh: torch.Tensor, masks: Optional[torch.Tensor]) -> torch.Tensor:
    """The recurrent part of every gate: h [B, units], weight_hh (G*units, units), masks None,
    [1, B, units] or [G, B, units] -> [B, G*units]."""
    if masks is None or masks.shape[0] == 1:
        return F.linear(h if masks is None else h * masks[0], weight_hh)
    g, units = masks.shape[0], h.shape[1]
    per_gate = torch.bmm(h.unsqueeze(0) * masks, weight_hh.view(g, units, units).transpose(1, 2))
    return per_gate.transpose(0, 1).reshape(h.shape[0], -1)


def _steps(step_mask: Optional[torch.Tensor], steps: int) -> list:
    """A mask [B, T] (True: a real step) as T masks [B, 1]; None as T Nones."""
    return [None] * steps if step_mask is None else list(step_mask.unsqueeze(-1).unbind(1))


def _carry(m: Optional[torch.Tensor], new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """The state after a step: the new one, or at a masked step (m False) the old one, as Keras."""
    return new if m is None else torch.where(m, new, old)


def _uniform_(module: nn.Module, units: int) -> None:
    """torch.nn's RNN initialisation, U(-1/sqrt(units), 1/sqrt(units)), for the cells of our own."""
    bound = 1.0 / math.sqrt(units)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def _zero_hidden_bias(rnn: nn.RNNBase) -> None:
    """Make torch's second bias vector a zero buffer, so parameters count as Keras's.

    nn.RNN and nn.LSTM add bias_ih_l0 + bias_hh_l0 where Keras has one bias: bias_ih_l0 carries
    the canonical bias and bias_hh_l0 stays zero. The fused kernel takes its weights as a list
    of tensors (`_flat_weights`), so a buffer there works with autograd and dtype casts alike.
    """
    zeros = torch.zeros_like(rnn.bias_hh_l0.data)
    del rnn.bias_hh_l0
    rnn.register_buffer("bias_hh_l0", zeros, persistent=False)
    rnn._init_flat_weights()


def _torch_tensors(rnn: nn.RNNBase) -> tuple:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of a one-layer torch RNN; without bias the last two are None."""
    if not rnn.bias:
        return rnn.weight_ih_l0, rnn.weight_hh_l0, None, None
    return rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0


# --- cells: each holds torch-layout weights, weight_ih (G*units, in) and weight_hh (G*units, units) ---


class SimpleRNNCell(nn.Module):
    """y(t) = act(x(t) W_x + y(t-1) W_y + b); weights live in `rnn`, an nn.RNN.

    rnn.weight_ih_l0 (units, in), rnn.weight_hh_l0 (units, units), rnn.bias_ih_l0 (units,).
    An activation other than tanh or relu runs the loop on the same weights.
    """

    gate_count = 1
    per_gate_masks = False  # Keras's SimpleRNNCell draws one mask, whatever the dropouts
    scannable = False  # the fused kernel or the loop

    def __init__(self, node, n_in: int):
        super().__init__()
        name = activation_name(node.activation)
        self.units, self.dropout, self.recurrent_dropout = node.units, node.dropout, node.recurrent_dropout
        self.fusable = name in ("tanh", "relu")
        self.activation = activation_fn(node.activation)
        self.rnn = nn.RNN(n_in, node.units, nonlinearity=name if self.fusable else "tanh", bias=node.use_bias, batch_first=True)
        if node.use_bias:
            _zero_hidden_bias(self.rnn)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        return self.rnn(x)[0]

    def tensors(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout; absent ones are None."""
        return _torch_tensors(self.rnn)

    def loop(self, x: torch.Tensor, in_masks, rec_masks, step_mask=None) -> torch.Tensor:
        """[B, T, F] -> [B, T, units], with Keras's per-sequence dropout masks; at a step that
        step_mask [B, T] masks, the state is carried over."""
        weight_ih, weight_hh, bias, _ = self.tensors()
        xp = _project(x, weight_ih, bias, in_masks)
        h = x.new_zeros(x.shape[0], self.units)
        outputs = []
        for xp_t, m in zip(xp.unbind(1), _steps(step_mask, x.shape[1])):
            h = _carry(m, self.activation(xp_t + _recur(h, weight_hh, rec_masks)), h)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class LNSimpleRNNCell(nn.Module):
    """y(t) = act(LayerNorm(x(t) W_x + y(t-1) W_y + b)), LayerNorm over units with eps `epsilon`.

    weight_ih (units, in), weight_hh (units, units), bias (units,) or None, gamma, beta (units,).
    """

    gate_count = 1
    per_gate_masks = False  # as SimpleRNNCell
    fusable = scannable = False  # its recurrence runs in float64 (see loop)

    def __init__(self, node, n_in: int):
        super().__init__()
        u = node.units
        self.units, self.dropout, self.recurrent_dropout = u, node.dropout, node.recurrent_dropout
        self.epsilon = node.epsilon
        self.activation = activation_fn(node.activation)
        self.weight_ih = nn.Parameter(torch.empty(u, n_in))
        self.weight_hh = nn.Parameter(torch.empty(u, u))
        self.bias = nn.Parameter(torch.empty(u)) if node.use_bias else None
        _uniform_(self, u)
        self.gamma = nn.Parameter(torch.ones(u))
        self.beta = nn.Parameter(torch.zeros(u))

    def tensors(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout; absent ones are None."""
        return self.weight_ih, self.weight_hh, self.bias, None

    def loop(self, x: torch.Tensor, in_masks, rec_masks, step_mask=None) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]; at a step that step_mask [B, T] masks, the state is carried over.

        The recurrence runs in float64 whatever the model's dtype (LN_RECURRENCE_DTYPE): layer
        normalisation divides by the spread of the pre-activations, which amplifies float32
        rounding of the state over long sequences (measured on specs/seq2seq_ln_rnn.yaml at 500
        steps: float32 off the float64 result by up to 3.4e-5 here and 1.4e-5 in Keras).
        As in the Keras cell, which must keep its state in the layer's dtype, the float64 state
        travels between steps as two parts in the model's dtype, h = hi + lo (hi the output):
        the forward pass is the same, and so is the backward pass, whose gradients reach hi
        in the model's dtype (with a float64 state instead, torch's float32 training drifted
        from Keras's about 100 times faster than for simple_rnn).
        Without gradients nothing flows back, so the float64 state is carried whole (hi + lo
        holds it to ~48 bits, the whole to 53; the outputs round to the model's dtype either way:
        tests/test_torch_scan.py) and the loop is half the ops a step.
        """
        wide, dtype = LN_RECURRENCE_DTYPE, x.dtype

        def cast(t):
            return None if t is None else t.to(wide)

        xp = _project(x.to(wide), self.weight_ih.to(wide), cast(self.bias), cast(in_masks))
        weight_hh, gamma, beta, rec_masks = self.weight_hh.to(wide), self.gamma.to(wide), self.beta.to(wide), cast(rec_masks)
        steps = _steps(step_mask, x.shape[1])
        if not torch.is_grad_enabled():
            h = xp.new_zeros(x.shape[0], self.units)
            outputs = []
            for xp_t, m in zip(xp.unbind(1), steps):
                h = _carry(m, self.activation(F.layer_norm(xp_t + _recur(h, weight_hh, rec_masks), (self.units,), gamma, beta, self.epsilon)), h)
                outputs.append(h)
            return torch.stack(outputs, dim=1).to(dtype)
        hi = lo = x.new_zeros(x.shape[0], self.units)
        outputs = []
        for xp_t, m in zip(xp.unbind(1), steps):
            h = hi.to(wide) + lo.to(wide)
            z = xp_t + _recur(h, weight_hh, rec_masks)
            h = self.activation(F.layer_norm(z, (self.units,), gamma, beta, self.epsilon))
            new_hi = h.to(dtype)
            hi, lo = _carry(m, new_hi, hi), _carry(m, (h - new_hi.to(wide)).to(dtype), lo)
            outputs.append(hi)
        return torch.stack(outputs, dim=1)


def _lstm_loop(cell, x, weight_ih, weight_hh, bias, in_masks, rec_masks, peepholes=None, step_mask=None) -> torch.Tensor:
    """The LSTM recurrence over [B, T, F] -> [B, T, units], gates in TORCH_LSTM_GATES order.

    peepholes: None or (p_i, p_f, p_o), each (units,): i and f see c(t-1), o sees c(t).
    step_mask None or [B, T]: at a masked step h and c are carried over.
    """
    act, ract = cell.activation, cell.recurrent_activation
    xp = _project(x, weight_ih, bias, in_masks)
    h = x.new_zeros(x.shape[0], cell.units)
    c = torch.zeros_like(h)
    outputs = []
    for xp_t, m in zip(xp.unbind(1), _steps(step_mask, x.shape[1])):
        zi, zf, zg, zo = (xp_t + _recur(h, weight_hh, rec_masks)).chunk(4, dim=1)
        if peepholes is not None:
            zi, zf = zi + peepholes[0] * c, zf + peepholes[1] * c
        c_new = ract(zf) * c + ract(zi) * act(zg)
        if peepholes is not None:
            zo = zo + peepholes[2] * c_new
        h, c = _carry(m, ract(zo) * act(c_new), h), _carry(m, c_new, c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


class LSTMCell(nn.Module):
    """LSTM with gates i, f, g, o; weights live in `lstm`, an nn.LSTM.

    lstm.weight_ih_l0 (4*units, in) and weight_hh_l0 (4*units, units), rows (W_i|W_f|W_g|W_o);
    lstm.bias_ih_l0 (4*units,). Activations other than tanh/sigmoid run the loop on the same weights.
    """

    gate_count = 4
    per_gate_masks = True  # Keras's LSTMCell switches to one mask per gate when recurrent_dropout > 0
    scannable = False  # nn.LSTM's oneDNN kernel trains faster than a scan would

    def __init__(self, node, n_in: int):
        super().__init__()
        self.units, self.dropout, self.recurrent_dropout = node.units, node.dropout, node.recurrent_dropout
        self.fusable = _default_gates(node)
        self.activation = activation_fn(node.activation)
        self.recurrent_activation = activation_fn(node.recurrent_activation)
        self.lstm = nn.LSTM(n_in, node.units, bias=node.use_bias, batch_first=True)
        if node.use_bias:
            _zero_hidden_bias(self.lstm)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        return self.lstm(x)[0]

    def tensors(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout; absent ones are None."""
        return _torch_tensors(self.lstm)

    def loop(self, x: torch.Tensor, in_masks, rec_masks, step_mask=None) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        weight_ih, weight_hh, bias, _ = self.tensors()  # bias_hh is the zero buffer
        return _lstm_loop(self, x, weight_ih, weight_hh, bias, in_masks, rec_masks, step_mask=step_mask)


class PeepholeLSTMCell(nn.Module):
    """LSTM whose i and f gates see c(t-1) and whose o gate sees c(t) (Gers and Schmidhuber, 2000).

    weight_ih (4*units, in), weight_hh (4*units, units), rows in TORCH_LSTM_GATES order;
    bias (4*units,) or None; peephole_i, peephole_f, peephole_o (units,), elementwise.
    """

    gate_count = 4
    per_gate_masks = True  # as LSTMCell, which Keras peephole cells derive from
    fusable = False

    def __init__(self, node, n_in: int):
        super().__init__()
        u = node.units
        self.units, self.dropout, self.recurrent_dropout = u, node.dropout, node.recurrent_dropout
        self.scannable = _default_gates(node)
        self.activation = activation_fn(node.activation)
        self.recurrent_activation = activation_fn(node.recurrent_activation)
        self.weight_ih = nn.Parameter(torch.empty(4 * u, n_in))
        self.weight_hh = nn.Parameter(torch.empty(4 * u, u))
        self.bias = nn.Parameter(torch.empty(4 * u)) if node.use_bias else None
        self.peephole_i = nn.Parameter(torch.empty(u))
        self.peephole_f = nn.Parameter(torch.empty(u))
        self.peephole_o = nn.Parameter(torch.empty(u))
        _uniform_(self, u)

    def tensors(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout; absent ones are None."""
        return self.weight_ih, self.weight_hh, self.bias, None

    def loop(self, x: torch.Tensor, in_masks, rec_masks, step_mask=None) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        peepholes = (self.peephole_i, self.peephole_f, self.peephole_o)
        return _lstm_loop(self, x, self.weight_ih, self.weight_hh, self.bias, in_masks, rec_masks, peepholes, step_mask)

    def prefers_scan(self, x: torch.Tensor) -> bool:
        """The scan rather than the loop: on CUDA (compiled steps), for training small layers on
        the CPU (SCAN_MAX_SIZE); the loop's forward is as fast on the CPU."""
        return x.device.type == "cuda" or _small_cpu_training(x, self.units, self.weight_hh)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, units] through _scan (tanh and sigmoid, no recurrent dropout)."""
        xp = F.linear(x, self.weight_ih, self.bias)
        return _scan.peephole_lstm(xp, self.weight_hh, self.peephole_i, self.peephole_f, self.peephole_o)


def _gru_loop(cell, x, weight_ih, weight_hh, bias_ih, bias_hh, in_masks, rec_masks, reset_after: bool, step_mask=None) -> torch.Tensor:
    """The GRU recurrence over [B, T, F] -> [B, T, units], gates in TORCH_GRU_GATES order.

    reset_after: n = act(x W_n + b_n + r * (h U_n + b_hn)); else n = act(x W_n + b_n + (r * h) U_n).
    h(t) = z * h(t-1) + (1 - z) * n, with the unmasked h(t-1) as Keras; at a step that
    step_mask [B, T] masks, h is carried over.
    """
    act, ract, u = cell.activation, cell.recurrent_activation, cell.units
    xp = _project(x, weight_ih, bias_ih, in_masks)
    h = x.new_zeros(x.shape[0], u)
    outputs = []
    for xp_t, m in zip(xp.unbind(1), _steps(step_mask, x.shape[1])):
        xr, xz, xn = xp_t.chunk(3, dim=1)
        if reset_after:
            hp = _recur(h, weight_hh, rec_masks)
            if bias_hh is not None:
                hp = hp + bias_hh
            hr, hz, hn = hp.chunk(3, dim=1)
            r, z = ract(xr + hr), ract(xz + hz)
            n = act(xn + r * hn)
        else:
            hr, hz = _recur(h, weight_hh[: 2 * u], None if rec_masks is None else rec_masks[:2]).chunk(2, dim=1)
            r, z = ract(xr + hr), ract(xz + hz)
            h_n = h if rec_masks is None else h * rec_masks[-1]
            n = act(xn + F.linear(r * h_n, weight_hh[2 * u :]))
        h = _carry(m, z * h + (1 - z) * n, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


class GRUCell(nn.Module):
    """GRU, reset_after=True (r applied after the recurrent matmul); weights live in `gru`, an nn.GRU.

    gru.weight_ih_l0 (3*units, in), gru.weight_hh_l0 (3*units, units), rows (W_r|W_z|W_n);
    gru.bias_ih_l0 and bias_hh_l0 (3*units,) are Keras's input and recurrent biases exactly.
    """

    gate_count = 3
    per_gate_masks = True  # Keras's GRUCell switches to one mask per gate when recurrent_dropout > 0

    def __init__(self, node, n_in: int):
        super().__init__()
        self.units, self.dropout, self.recurrent_dropout = node.units, node.dropout, node.recurrent_dropout
        self.fusable = self.scannable = _default_gates(node)
        self.activation = activation_fn(node.activation)
        self.recurrent_activation = activation_fn(node.recurrent_activation)
        self.gru = nn.GRU(n_in, node.units, bias=node.use_bias, batch_first=True)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        return self.gru(x)[0]

    def tensors(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout; absent ones are None."""
        return _torch_tensors(self.gru)

    def loop(self, x: torch.Tensor, in_masks, rec_masks, step_mask=None) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        return _gru_loop(self, x, *self.tensors(), in_masks, rec_masks, reset_after=True, step_mask=step_mask)

    def prefers_scan(self, x: torch.Tensor) -> bool:
        """The scan rather than nn.GRU: for training small layers on the CPU (SCAN_MAX_SIZE);
        cuDNN trains GRUs fused."""
        return _small_cpu_training(x, self.units, self.gru.weight_hh_l0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, units] through _scan (tanh and sigmoid, no recurrent dropout)."""
        weight_ih, weight_hh, bias_ih, bias_hh = self.tensors()
        return _scan.gru_reset_after(F.linear(x, weight_ih, bias_ih), weight_hh, bias_hh)


class GRUResetBeforeCell(nn.Module):
    """GRU, reset_after=False, the textbook form: n = act(x W_n + (r * h) U_n + b_n).

    weight_ih (3*units, in), weight_hh (3*units, units), rows in TORCH_GRU_GATES order (r, z, n);
    bias (3*units,) or None: one bias, as Keras has for this form.
    """

    gate_count = 3
    per_gate_masks = True  # as GRUCell
    fusable = False

    def __init__(self, node, n_in: int):
        super().__init__()
        u = node.units
        self.units, self.dropout, self.recurrent_dropout = u, node.dropout, node.recurrent_dropout
        self.scannable = _default_gates(node)
        self.activation = activation_fn(node.activation)
        self.recurrent_activation = activation_fn(node.recurrent_activation)
        self.weight_ih = nn.Parameter(torch.empty(3 * u, n_in))
        self.weight_hh = nn.Parameter(torch.empty(3 * u, u))
        self.bias = nn.Parameter(torch.empty(3 * u)) if node.use_bias else None
        _uniform_(self, u)

    def tensors(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout; absent ones are None."""
        return self.weight_ih, self.weight_hh, self.bias, None

    def loop(self, x: torch.Tensor, in_masks, rec_masks, step_mask=None) -> torch.Tensor:
        """[B, T, F] -> [B, T, units]."""
        return _gru_loop(self, x, self.weight_ih, self.weight_hh, self.bias, None, in_masks, rec_masks, reset_after=False, step_mask=step_mask)

    def prefers_scan(self, x: torch.Tensor) -> bool:
        """Always: faster than the loop at every size measured."""
        return True

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, units] through _scan (tanh and sigmoid, no recurrent dropout)."""
        return _scan.gru_reset_before(F.linear(x, self.weight_ih, self.bias), self.weight_hh)


# --- layers -----------------------------------------------------------------------------------


def _dropout_masks(n: int, shape: tuple, rate: float, like: torch.Tensor) -> torch.Tensor:
    """n masks of `shape`, each element kept with probability 1 - rate and scaled by 1/(1 - rate)."""
    keep = 1.0 - rate
    return _distributed.bernoulli((n, *shape), 1, keep, like).div_(keep)  # drawn for the global batch when sharded


class Recurrent(nn.Module):
    """A cell run over time: [B, T, F] -> [B, T, units] (return_sequences) or [B, units].

    Dropout as Keras 3: `dropout` is one mask per sequence on the inputs and `recurrent_dropout`
    one mask per sequence on h(t-1), both reused at every step (one per gate for LSTM and GRU
    cells when recurrent_dropout > 0, as Keras's implementation 1). `go_backwards` reads the
    sequence from its end and, as Keras, returns the outputs in the order it read them.

    A mask [B, T] (True: a real step) is honoured as Keras's RNN does: a masked step leaves the
    state as it was, and its output is the last real step's output (zeros before the first one),
    or zeros with `zero_output_for_mask` (as Bidirectional sets it when returning sequences).
    Two paths compute it: the fast one (`use_compaction`) moves each row's real steps to its
    front, runs the unmasked path (the fused kernel, the scan or the loop) on that, and gathers
    the outputs back; a masked step changes nothing, so this is the same recurrence, and with
    the mask at the end (padding) the input is not even moved. The general one runs the step
    loop with the mask (every cell's `loop(..., step_mask)`); tests check the two equal.
    """

    takes = gives = "channels_last"

    def __init__(self, cell: nn.Module, return_sequences: bool, go_backwards: bool = False, zero_output_for_mask: bool = False):
        super().__init__()
        self.cell = cell
        self.return_sequences = return_sequences
        self.go_backwards = go_backwards
        self.zero_output_for_mask = zero_output_for_mask
        # Tests switch these off to compare the fused kernel, the scan and the compaction with the plain loop.
        self.use_fused = True
        self.use_scan = True
        self.use_compaction = True

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        if mask is None:
            seq = self.sequence(x)
        else:
            seq = self.compacted(x, mask) if self.use_compaction else self.sequence(x, mask)
            if self.zero_output_for_mask and self.return_sequences:
                seq = torch.where(mask.unsqueeze(-1), seq, 0)
        return seq if self.return_sequences else seq[:, -1]

    def compacted(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every step's output under `mask` [B, T], each row's real steps run first, unmasked.

        Output step t is the output after the real steps up to t: count(t) of them, so the
        compacted run's step count(t) - 1, or zeros when count(t) is 0.
        """
        b, t, f = x.shape
        count = mask.cumsum(1)  # [B, T]: real steps up to and including t
        real = count[:, -1:]
        steps = torch.arange(t, device=x.device)
        if not bool((mask == (steps < real)).all()):  # not end padding: move the real steps first
            # A stable order: real steps by time, then the masked ones.
            order = torch.argsort((~mask).to(torch.int64) * t + steps, dim=1)
            x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, f))
        seq = self.sequence(x)
        index = (count - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, seq.shape[-1])
        return torch.where((count > 0).unsqueeze(-1), seq.gather(1, index), 0)

    def sequence(self, x: torch.Tensor, step_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Every step's output, [B, T, F] -> [B, T, units]; with step_mask [B, T], through the
        step loop, the state carried over the masked steps."""
        cell, (b, _, f) = self.cell, x.shape
        training = self.training
        n = cell.gate_count if cell.per_gate_masks and cell.recurrent_dropout > 0 else 1
        in_masks = _dropout_masks(n, (b, 1, f), cell.dropout, x) if training and cell.dropout > 0 else None
        rec_masks = _dropout_masks(n, (b, cell.units), cell.recurrent_dropout, x) if training and cell.recurrent_dropout > 0 else None
        if rec_masks is None and step_mask is None:
            # Without recurrent dropout there is at most one input mask, constant over time.
            masked = x if in_masks is None else x * in_masks[0]
            if self.use_scan and cell.scannable and cell.prefers_scan(masked):
                return cell.scan(masked)
            if self.use_fused and cell.fusable:
                return cell.fused(masked)
        return cell.loop(x, in_masks, rec_masks, step_mask)


class Bidirectional(nn.Module):
    """Forward and backward passes merged: [B, T, F] -> [B, (T,) units] (x2 for concat).

    As keras.layers.Bidirectional: the backward layer reads backwards (go_backwards), and its
    outputs are flipped back to the input's order when returning sequences.
    """

    takes = gives = "channels_last"

    def __init__(self, forward: Recurrent, backward: Recurrent, merge_mode: str):
        super().__init__()
        self.forward_layer = forward
        self.backward_layer = backward
        self.merge_mode = merge_mode

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        a, b = self.forward_layer(x, mask), self.backward_layer(x, mask)
        if self.backward_layer.return_sequences:
            b = b.flip(1)
        if self.merge_mode == "concat":
            return torch.cat([a, b], dim=-1)
        if self.merge_mode == "sum":
            return a + b
        if self.merge_mode == "mul":
            return a * b
        return (a + b) / 2
