"""Builders: one function per spec node class, from the node, its Site and its input to the ONNX nodes that compute it.

Every tensor between layers is channels-last, [batch, time, features] or [batch, features], as in
the spec; convolutions and pools transpose to ONNX's channels-first layout around themselves.
Recurrent layers become ONNX's own RNN, LSTM and GRU ops wherever those compute the layer
exactly, and a Scan over the cell's step otherwise (ln_simple_rnn, activations the ops lack).

Masks (seqspec/_masks.py) travel as a [batch, time] bool tensor beside the layers' outputs:
`masking` and `embedding` make it (MASKS), and a layer that reads it finds it in `site.mask`. A
recurrent layer under a mask is a Scan whose step keeps the old state where the step is masked,
as Keras: ONNX's recurrent ops take each row's length (`sequence_lens`), which says where a row
ends but not which steps inside it are masked.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from onnx import TensorProto, helper

import seqspec as s
from seqspec import Window

from . import _activations as acts
from ._graph import INT64_MAX, INT64_MIN, Graph, value_info

BACKEND_NAME = "onnx"

# Gate orders: the canonical arrays' (seqspec.LSTM_GATES, seqspec.GRU_GATES) and the ONNX ops'
# (onnx.ai/onnx/operators: LSTM is i, o, f, c; GRU is z, r, h), in canonical names.
ONNX_LSTM_GATES = ("i", "o", "f", "g")
ONNX_GRU_GATES = ("z", "r", "g")
ONNX_PEEPHOLES = ("i", "o", "f")


@dataclasses.dataclass(frozen=True)
class Site(s.Site):
    """seqspec.Site, plus the canonical arrays' prefix of the node (`layers.3.`, `layers.3.forward.`) and the weights."""

    prefix: str = ""
    model_dtype: str = "float32"  # the artifact's dtype, which `export --dtype` may set apart from the spec's
    weights: Optional[dict] = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    notes: Optional[list] = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    mask: Optional[str] = None  # the [batch, time] bool tensor of the mask reaching the node (True: a real step), if any

    @property
    def dtype(self) -> str:
        return self.model_dtype

    def w(self, name: str) -> np.ndarray:
        """The canonical array `prefix + name`, in the model's dtype."""
        return np.asarray(self.weights[self.prefix + name], dtype=self.dtype)

    def has(self, name: str) -> bool:
        return self.prefix + name in self.weights

    def under(self, key: str, prefix: str = "") -> "Site":
        """The site of a wrapped node (`layer`, `cell`), its arrays under `prefix` more."""
        return dataclasses.replace(self, path=self.path + (key,), prefix=self.prefix + prefix)

    def note(self, line: str) -> None:
        self.notes.append(line)


def build(node, site: Site, g: Graph, x: str) -> str:
    """The output of any node on input `x`, through BUILDERS (a missing entry is a located BackendError)."""
    return BUILDERS.lookup(node, site.where())(node, site, g, x)


# --- recurrent cells and layers --------------------------------------------------------------


def _gate_stack(site: Site, kind: str, gates: tuple[str, ...]) -> np.ndarray:
    """The per-gate arrays `kind_{g}` joined along the last axis, in `gates` order."""
    return np.concatenate([site.w(f"{kind}_{g}") for g in gates], axis=-1)


@dataclasses.dataclass
class Native:
    """One direction of a native RNN/LSTM/GRU op: W [G*u, in], R [G*u, u], B [2*G*u] or None, P [3u] or None."""

    W: np.ndarray
    R: np.ndarray
    B: Optional[np.ndarray]
    P: Optional[np.ndarray] = None


def _native_simple(cell, site: Site) -> Native:
    b = site.w("bias") if cell.use_bias else None
    return Native(site.w("kernel").T, site.w("recurrent_kernel").T, None if b is None else np.concatenate([b, np.zeros_like(b)]))


def _native_lstm(cell, site: Site) -> Native:
    w = _gate_stack(site, "kernel", ONNX_LSTM_GATES).T
    r = _gate_stack(site, "recurrent_kernel", ONNX_LSTM_GATES).T
    b = None
    if cell.use_bias:
        wb = np.concatenate([site.w(f"bias_{g}") for g in ONNX_LSTM_GATES])
        b = np.concatenate([wb, np.zeros_like(wb)])
    p = np.concatenate([site.w(f"peephole_{g}") for g in ONNX_PEEPHOLES]) if isinstance(cell, s.PeepholeLSTMCell) else None
    return Native(w, r, b, p)


def _native_gru(cell, site: Site) -> Native:
    w = _gate_stack(site, "kernel", ONNX_GRU_GATES).T
    r = _gate_stack(site, "recurrent_kernel", ONNX_GRU_GATES).T
    b = None
    if cell.use_bias:
        wb = np.concatenate([site.w(f"bias_{g}") for g in ONNX_GRU_GATES])
        # reset_after: the recurrent bias sits inside r * (h R_h + Rb_h), ONNX's linear_before_reset.
        rb = np.concatenate([site.w(f"recurrent_bias_{g}") for g in ONNX_GRU_GATES]) if cell.reset_after else np.zeros_like(wb)
        b = np.concatenate([wb, rb])
    return Native(w, r, b)


# cell class -> (ONNX op, native weights, the cell's activations in the op's order, the op's defaults)
NATIVE_CELLS: dict[type, tuple[str, Callable, Callable, list[str]]] = {
    s.SimpleRNNCell: ("RNN", _native_simple, lambda c: [c.activation], ["tanh"]),
    s.LSTMCell: ("LSTM", _native_lstm, lambda c: [c.recurrent_activation, c.activation, c.activation], ["sigmoid", "tanh", "tanh"]),
    s.PeepholeLSTMCell: ("LSTM", _native_lstm, lambda c: [c.recurrent_activation, c.activation, c.activation], ["sigmoid", "tanh", "tanh"]),
    s.GRUCell: ("GRU", _native_gru, lambda c: [c.recurrent_activation, c.activation], ["sigmoid", "tanh"]),
}


def _native(cell, sites: list[Site], g: Graph, x: str) -> Optional[list[tuple[str, str]]]:
    """(sequence [B, T, u], last [B, u]) per direction from one native op, or None when no op computes the cell exactly."""
    if type(cell) not in NATIVE_CELLS:
        return None
    op_type, weights, activations, defaults = NATIVE_CELLS[type(cell)]
    d = len(sites)
    attrs = acts.recurrent_activations(activations(cell) * d, g.dtype, defaults * d)
    if attrs is None:
        return None
    parts = [weights(cell, site) for site in sites]
    w = g.const(np.stack([p.W for p in parts]), "W")
    r = g.const(np.stack([p.R for p in parts]), "R")
    inputs = [g.transpose(x, [1, 0, 2]), w, r]  # the ops take [time, batch, features]: onnxruntime refuses layout=1
    optional = [None if parts[0].B is None else np.stack([p.B for p in parts])]
    if parts[0].P is not None:
        optional += [None, None, None, np.stack([p.P for p in parts])]  # sequence_lens, initial_h, initial_c, P
    while optional and optional[-1] is None:
        optional.pop()
    inputs += ["" if a is None else g.const(a, "B" if k == 0 else "P") for k, a in enumerate(optional)]
    if op_type == "GRU":
        attrs["linear_before_reset"] = int(cell.reset_after)
    direction = "bidirectional" if d == 2 else "forward"
    y, y_h = g.op(op_type, inputs, outputs=2, hidden_size=cell.units, direction=direction, **attrs)
    out = []
    for k in range(d):
        seq = y if d == 1 else g.slice(y, k, k + 1, axis=1)  # Y is [time, directions, batch, units]
        last = y_h if d == 1 else g.slice(y_h, k, k + 1, axis=0)  # Y_h is [directions, batch, units]
        out.append((g.transpose(g.squeeze(seq, 1), [1, 0, 2]), g.squeeze(last, 0)))
    return out


# --- the Scan form: a cell's step written out, for what no native op computes -----------------


def _simple_step(cell, site: Site, b: Graph, states: list[str], xp: str) -> tuple[list[str], str]:
    h = acts.apply(b, cell.activation, b.op("Add", [xp, b.op("MatMul", [states[0], b.const(site.w("recurrent_kernel"), "R")])]))
    return [h], h


def _ln_simple_step(cell, site: Site, b: Graph, states: list[str], xp: str) -> tuple[list[str], str]:
    z = b.op("Add", [xp, b.op("MatMul", [states[0], b.const(site.w("recurrent_kernel"), "R")])])
    mean = b.op("ReduceMean", [z, b.ints([-1])], keepdims=1)
    centred = b.op("Sub", [z, mean])
    var = b.op("ReduceMean", [b.op("Mul", [centred, centred]), b.ints([-1])], keepdims=1)
    normed = b.op("Div", [centred, b.op("Sqrt", [b.op("Add", [var, b.const(cell.epsilon)])])])
    h = acts.apply(b, cell.activation, b.op("Add", [b.op("Mul", [normed, b.const(site.w("gamma"), "gamma")]), b.const(site.w("beta"), "beta")]))
    return [h], h


def _lstm_step(cell, site: Site, b: Graph, states: list[str], xp: str) -> tuple[list[str], str]:
    h, c = states
    z = b.op("Add", [xp, b.op("MatMul", [h, b.const(_gate_stack(site, "recurrent_kernel", s.LSTM_GATES), "R")])])
    zi, zf, zg, zo = b.op("Split", [z], outputs=4, axis=-1, num_outputs=4)
    peephole = isinstance(cell, s.PeepholeLSTMCell)
    if peephole:  # i and f see c(t-1), o sees c(t)
        zi = b.op("Add", [zi, b.op("Mul", [c, b.const(site.w("peephole_i"), "peephole_i")])])
        zf = b.op("Add", [zf, b.op("Mul", [c, b.const(site.w("peephole_f"), "peephole_f")])])
    ract = cell.recurrent_activation
    c = b.op("Add", [b.op("Mul", [acts.apply(b, ract, zf), c]), b.op("Mul", [acts.apply(b, ract, zi), acts.apply(b, cell.activation, zg)])])
    if peephole:
        zo = b.op("Add", [zo, b.op("Mul", [c, b.const(site.w("peephole_o"), "peephole_o")])])
    h = b.op("Mul", [acts.apply(b, ract, zo), acts.apply(b, cell.activation, c)])
    return [h, c], h


def _gru_step(cell, site: Site, b: Graph, states: list[str], xp: str) -> tuple[list[str], str]:
    h, u, ract = states[0], cell.units, cell.recurrent_activation
    xz, xr, xg = b.op("Split", [xp], outputs=3, axis=-1, num_outputs=3)
    rk = _gate_stack(site, "recurrent_kernel", s.GRU_GATES)
    if cell.reset_after:
        hp = b.op("MatMul", [h, b.const(rk, "R")])
        if cell.use_bias:
            hp = b.op("Add", [hp, b.const(_gate_stack(site, "recurrent_bias", s.GRU_GATES), "recurrent_bias")])
        hz, hr, hg = b.op("Split", [hp], outputs=3, axis=-1, num_outputs=3)
        z, r = acts.apply(b, ract, b.op("Add", [xz, hz])), acts.apply(b, ract, b.op("Add", [xr, hr]))
        n = acts.apply(b, cell.activation, b.op("Add", [xg, b.op("Mul", [r, hg])]))
    else:
        hz, hr = b.op("Split", [b.op("MatMul", [h, b.const(rk[:, : 2 * u], "R")])], outputs=2, axis=-1, num_outputs=2)
        z, r = acts.apply(b, ract, b.op("Add", [xz, hz])), acts.apply(b, ract, b.op("Add", [xr, hr]))
        n = acts.apply(b, cell.activation, b.op("Add", [xg, b.op("MatMul", [b.op("Mul", [r, h]), b.const(rk[:, 2 * u :], "R_g")])]))
    one_minus_z = b.op("Sub", [b.const(1.0), z])
    h = b.op("Add", [b.op("Mul", [z, h]), b.op("Mul", [one_minus_z, n])])
    return [h], h


# cell class -> (the canonical gates of its input projection (None: one kernel), states, step, why no native op)
SCAN_CELLS: dict[type, tuple[Optional[tuple[str, ...]], int, Callable]] = {
    s.SimpleRNNCell: (None, 1, _simple_step),
    s.LNSimpleRNNCell: (None, 1, _ln_simple_step),
    s.LSTMCell: (s.LSTM_GATES, 2, _lstm_step),
    s.PeepholeLSTMCell: (s.LSTM_GATES, 2, _lstm_step),
    s.GRUCell: (s.GRU_GATES, 1, _gru_step),
}

# The recurrence of a layer-normalised RNN runs in float64 whatever the model's dtype, as the
# torch backend's (LN_RECURRENCE_DTYPE there): layer normalisation divides by the spread of the
# pre-activations and amplifies float32 rounding of the state over long sequences.
WIDE_CELLS = (s.LNSimpleRNNCell,)


def _scan(cell, site: Site, g: Graph, x: str, reverse: bool, mask: Optional[str] = None) -> tuple[str, str]:
    """(sequence [B, T, u] aligned to the input steps, last output [B, u]) of one direction, as a
    Scan. With `mask` [B, T] (bool), a masked step leaves every state as it was, so its output is
    the last real step's (zeros before the first one) and `last` the last real step's, as Keras."""
    if type(cell) not in SCAN_CELLS:
        raise s.BackendError(f"{site.where()}: the onnx target has no Scan step for {cell.type!r} ({type(cell).__name__}): add one to SCAN_CELLS in {__name__.replace('.', '/')}.py")
    gates, n_states, step = SCAN_CELLS[type(cell)]
    wide = isinstance(cell, WIDE_CELLS) and g.dtype != "float64"
    outer = Graph("float64", g.counter, g.scope) if wide else g
    # Time-major, forward only, flipped by hand: onnx's reference evaluator (the float64 runtime)
    # runs a Scan over axis 0 in its own direction only. A wide cell projects its input inside
    # the step: onnxruntime 1.32's full optimisation segfaults when a Transpose, a Cast to float64
    # and a MatMul meet outside (measured on seq2seq_ln_rnn).
    steps = g.transpose(x, [1, 0, 2])
    keep = None if mask is None else g.unsqueeze(g.transpose(mask, [1, 0]), 2)  # [T, B, 1]
    if reverse:
        steps = _flip_time(g, steps)
        keep = None if keep is None else _flip_time(g, keep)
    if wide:
        outer.nodes, outer.initializers = g.nodes, g.initializers
        steps = g.op("Cast", [steps], to=outer.elem_type)
    wsite = dataclasses.replace(site, model_dtype=outer.dtype) if wide else site
    kernel = wsite.w("kernel") if gates is None else _gate_stack(wsite, "kernel", gates)
    bias = None
    if cell.use_bias:
        bias = wsite.w("bias") if gates is None else np.concatenate([wsite.w(f"bias_{k}") for k in gates])
    if not wide:
        steps = outer.matmul_add(steps, kernel, bias)  # every step's input projection at once: [T, B, G*u]
    u = cell.units
    body = outer.body()
    state_in = [body.name("state") for _ in range(n_states)]
    x_t = body.name("x_t")
    new_states, y_t = step(cell, wsite, body, state_in, body.matmul_add(x_t, kernel, bias) if wide else x_t)
    scanned = [value_info(x_t, outer.dtype, ["batch", kernel.shape[0 if wide else -1]])]
    if keep is not None:
        m_t = body.name("m_t")
        scanned.append(helper.make_tensor_value_info(m_t, TensorProto.BOOL, ["batch", 1]))
        new_states = [body.op("Where", [m_t, new, old]) for new, old in zip(new_states, state_in)]
        y_t = new_states[0]  # every cell's output is its first state, h
    y_t = body.op("Identity", [y_t])
    graph = helper.make_graph(
        body.nodes,
        body.name("step"),
        [value_info(n, outer.dtype, ["batch", u]) for n in state_in] + scanned,
        [value_info(n, outer.dtype, ["batch", u]) for n in new_states + [y_t]],
        body.initializers,
    )
    init = [outer.zeros_like_rows(x, u) for _ in range(n_states)]
    outs = outer.op("Scan", init + [steps] + ([] if keep is None else [keep]), outputs=n_states + 1, body=graph, num_scan_inputs=1 + (keep is not None))
    last, seq = outs[0], outs[-1]
    if wide:
        last, seq = g.op("Cast", [last], to=g.elem_type), g.op("Cast", [seq], to=g.elem_type)
    if reverse:
        seq = _flip_time(g, seq)
    return g.transpose(seq, [1, 0, 2]), last


def _flip_time(g: Graph, x: str, axis: int = 0) -> str:
    """`x` with its steps (along `axis`: [T, ...] by default) in reverse order."""
    return g.op("Slice", [x, g.ints([-1]), g.ints([INT64_MIN]), g.ints([axis]), g.ints([-1])])


def _directions(node, site: Site, g: Graph, x: str, sites: list[Site]) -> list[tuple[str, str]]:
    """(sequence, last) per direction of a recurrent layer (one site per direction: forward, then backward)."""
    cell = node.cell_node
    out = None if site.mask is not None else _native(cell, sites, g, x)
    if out is not None:
        return out
    site.note(f"onnx: {site.spec.locate(*site.path)} ({cell.type}) is a Scan over time: {_why_scan(cell, site, g)}")
    return [_scan(cell, d, g, x, reverse=k == 1, mask=site.mask) for k, d in enumerate(sites)]


def _why_scan(cell, site: Site, g: Graph) -> str:
    """Why a recurrent layer is a Scan rather than a native op, for the export's notes."""
    if site.mask is not None:
        return "it reads a mask (ONNX's recurrent ops take row lengths, not a mask anywhere in a row)"
    if isinstance(cell, s.LNSimpleRNNCell):
        return "ONNX has no layer-normalised RNN op"
    if g.dtype == "float64" and type(cell) in NATIVE_CELLS:
        return "in float64 the ONNX op runs only with its default activations (onnx's reference evaluator ignores others)"
    return "the ONNX op cannot compute its activations exactly"


def _cell_site(node, site: Site) -> Site:
    return site.under("cell") if isinstance(node, s.RNN) else site


def recurrent(node, site: Site, g: Graph, x: str) -> str:
    """simple_rnn, lstm, gru and rnn: [B, T, F] -> [B, T, u] (return_sequences) or [B, u].

    go_backwards, as Keras: the steps (and their mask) read from the end, the outputs in the order read."""
    if node.go_backwards:
        x = _flip_time(g, x, axis=1)
        if site.mask is not None:
            site = dataclasses.replace(site, mask=_flip_time(g, site.mask, axis=1))
    seq, last = _directions(node, site, g, x, [_cell_site(node, site)])[0]
    return seq if node.return_sequences else last


def bidirectional(node: s.Bidirectional, site: Site, g: Graph, x: str) -> str:
    inner = site.under("layer")
    sites = [_cell_site(node.layer, dataclasses.replace(inner, prefix=inner.prefix + p)) for p in ("forward.", "backward.")]
    (fs, fl), (bs, bl) = _directions(node.layer, inner, g, x, sites)
    a, b = (fs, bs) if node.layer.return_sequences else (fl, bl)
    if site.mask is not None and node.layer.return_sequences:
        # Keras's Bidirectional sets zero_output_for_mask when returning sequences: zeros at masked steps.
        keep = g.unsqueeze(site.mask, 2)
        zero = g.const(0.0)
        a, b = g.op("Where", [keep, a, zero]), g.op("Where", [keep, b, zero])
    if node.merge_mode == "concat":
        return g.op("Concat", [a, b], axis=-1)
    if node.merge_mode == "sum":
        return g.op("Add", [a, b])
    if node.merge_mode == "mul":
        return g.op("Mul", [a, b])
    return g.op("Mul", [g.op("Add", [a, b]), g.const(0.5)])


def _cell(node, site: Site, g: Graph, x: str) -> str:
    raise s.BackendError(f"{site.where()}: a {node.type} cell runs only inside an rnn layer")


# --- feed-forward layers ---------------------------------------------------------------------


def dense(node: s.Dense, site: Site, g: Graph, x: str) -> str:
    y = g.matmul_add(x, site.w("kernel"), site.w("bias") if node.use_bias else None)
    return acts.apply(g, node.activation, y)


def time_distributed(node: s.TimeDistributed, site: Site, g: Graph, x: str) -> str:
    return build(node.layer, site.under("layer"), g, x)


def flatten(node: s.Flatten, site: Site, g: Graph, x: str) -> str:
    # Step-major, as Keras: [B, T, F] -> [B, T*F].
    return x if len(site.in_shape) == 2 else g.op("Reshape", [x, g.ints([0, -1])])


def repeat_vector(node: s.RepeatVector, site: Site, g: Graph, x: str) -> str:
    return g.op("Expand", [g.unsqueeze(x, 1), g.ints([1, node.n, 1])])


def dropout(node: s.Dropout, site: Site, g: Graph, x: str) -> str:
    return x  # an artifact is for inference, where dropout is the identity


def activation(node: s.ActivationLayer, site: Site, g: Graph, x: str) -> str:
    return acts.apply(g, node.activation, x)


def batch_norm(node: s.BatchNorm, site: Site, g: Graph, x: str) -> str:
    # Inference: x * inv + (beta - mean * inv), inv = gamma / sqrt(variance + epsilon), in the model's dtype.
    eps = np.asarray(node.epsilon, dtype=g.np_dtype)
    inv = (1.0 / np.sqrt(site.w("moving_variance") + eps)) * site.w("gamma")
    shift = site.w("beta") - site.w("moving_mean") * inv
    return g.op("Add", [g.op("Mul", [x, g.const(inv, "scale")]), g.const(shift, "shift")])


def layer_norm(node: s.LayerNorm, site: Site, g: Graph, x: str) -> str:
    # Written out: LayerNormalization's epsilon is a float32 attribute, not exact in float64.
    mean = g.op("ReduceMean", [x, g.ints([-1])], keepdims=1)
    centred = g.op("Sub", [x, mean])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred]), g.ints([-1])], keepdims=1)
    normed = g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, g.const(node.epsilon)])])])
    return g.op("Add", [g.op("Mul", [normed, g.const(site.w("gamma"), "gamma")]), g.const(site.w("beta"), "beta")])


# --- convolutions and pools: ONNX's are channels-first, [B, C, T] --------------------------------


def _pad_time(g: Graph, x: str, window: Window, axis: int, value: Optional[float] = None) -> str:
    """`x` padded along `axis` by TensorFlow's rule (seqspec.Window.pads): fixed pads, or for 'same'
    with a stride pads computed from the length at run time (the odd one on the right)."""
    if window.padding == "valid":
        return x
    fill = [] if value is None else [g.const(np.asarray(value, g.np_dtype), "fill")]
    if window.padding == "same" and window.stride > 1:
        t = g.dim(x, axis)
        stride, span = g.ints([window.stride]), g.ints([window.span])
        out = g.op("Div", [g.op("Add", [t, g.ints([window.stride - 1])]), stride])  # ceil(T / stride)
        need = g.op("Sub", [g.op("Add", [g.op("Mul", [g.op("Sub", [out, g.ints([1])]), stride]), span]), t])
        total = g.op("Max", [need, g.ints([0])])
        left = g.op("Div", [total, g.ints([2])])
        pads = g.op("Concat", [left, g.op("Sub", [total, left])], axis=0)
    else:
        left, right = window.pads(window.span)  # fixed: causal, explicit, 'same' with stride 1
        if left == right == 0:
            return x
        pads = g.ints([left, right])
    return g.op("Pad", [x, pads] + (fill if fill else [""]) + [g.ints([axis])])


def _conv(g: Graph, x: str, kernel: np.ndarray, bias: Optional[np.ndarray], window: Window, groups: int = 1) -> str:
    """A convolution on channels-first `x` [B, in, T] -> [B, filters, T'] with Keras's padding;
    `kernel` is canonical [k, in / groups, filters], ONNX's is (filters, in / groups, k)."""
    inputs = [_pad_time(g, x, window, axis=2), g.const(np.transpose(kernel, (2, 1, 0)), "kernel")]
    if bias is not None:
        inputs.append(g.const(bias, "bias"))
    return g.op("Conv", inputs, kernel_shape=[window.kernel], strides=[window.stride], dilations=[window.dilation], group=groups, pads=[0, 0])


def _channels_first(g: Graph, x: str) -> str:
    return g.transpose(x, [0, 2, 1])


def conv1d(node: s.Conv1D, site: Site, g: Graph, x: str) -> str:
    y = _conv(g, _channels_first(g, x), site.w("kernel"), site.w("bias") if node.use_bias else None, node.window, node.groups)
    return acts.apply(g, node.activation, _channels_first(g, y))


def max_pool1d(node: s.MaxPool1D, site: Site, g: Graph, x: str) -> str:
    w = node.window
    padded = _pad_time(g, _channels_first(g, x), w, axis=2, value=-np.inf)  # padding never wins, as TensorFlow
    return _channels_first(g, g.op("MaxPool", [padded], kernel_shape=[w.kernel], strides=[w.stride]))


def avg_pool1d(node: s.AvgPool1D, site: Site, g: Graph, x: str) -> str:
    w = node.window
    xc = _channels_first(g, x)
    padded = _pad_time(g, xc, w, axis=2)
    mean = g.op("AveragePool", [padded], kernel_shape=[w.kernel], strides=[w.stride])
    if padded != xc:  # 'same' averages only the real steps of each window, as TensorFlow
        ones = g.op("ConstantOfShape", [g.op("Concat", [g.ints([1, 1]), g.dim(xc, 2)], axis=0)], value=helper.make_tensor("one", g.elem_type, [1], [1.0]))
        share = g.op("AveragePool", [_pad_time(g, ones, w, axis=2)], kernel_shape=[w.kernel], strides=[w.stride])
        mean = g.op("Div", [mean, share])
    return _channels_first(g, mean)


def global_max_pool1d(node, site: Site, g: Graph, x: str) -> str:
    return g.op("ReduceMax", [x, g.ints([1])], keepdims=0)


def global_avg_pool1d(node, site: Site, g: Graph, x: str) -> str:
    if site.mask is None:
        return g.op("ReduceMean", [x, g.ints([1])], keepdims=0)
    # The mean of the real steps only, as Keras (0 / 0, NaN, for a row with none).
    keep = g.op("Cast", [g.unsqueeze(site.mask, 2)], to=g.elem_type)
    total = g.op("ReduceSum", [g.op("Mul", [x, keep]), g.ints([1])], keepdims=0)
    return g.op("Div", [total, g.op("ReduceSum", [keep, g.ints([1])], keepdims=0)])


def wavenet(node: s.WaveNet, site: Site, g: Graph, x: str) -> str:
    """Channels-first from its first convolution to its last: one transpose each way."""
    convs = node.convolutions(site.n_in)
    x = _channels_first(g, x)

    def conv(c, x):
        return _conv(g, x, site.w(f"{c.name}.kernel"), site.w(f"{c.name}.bias"), Window(c.kernel_size, 1, c.dilation_rate, "causal"))

    if not node.gated:
        for c in convs:
            x = acts.apply(g, node.activation, conv(c, x), axis=1)
        return _channels_first(g, x)
    x = conv(convs[0], x)
    skips = None
    f = node.filters
    for dilated, residual in zip(convs[1::2], convs[2::2]):
        d = conv(dilated, x)
        gate = g.op("Mul", [g.op("Tanh", [g.slice(d, 0, f, axis=1)]), g.op("Sigmoid", [g.slice(d, f, 2 * f, axis=1)])])
        out = conv(residual, gate)
        x = g.op("Add", [x, out])
        skips = out if skips is None else g.op("Add", [skips, out])
    return _channels_first(g, g.op("Relu", [skips]))


# --- masks and tokens ------------------------------------------------------------------------------


def masking(node: s.Masking, site: Site, g: Graph, x: str) -> str:
    """keras.layers.Masking: the masked steps' features set to 0 (its mask: MASKS)."""
    return g.op("Where", [g.unsqueeze(_masking_mask(node, site, g, x), 2), x, g.const(0.0)])


def _masking_mask(node: s.Masking, site: Site, g: Graph, x: str) -> str:
    """[B, T] bool: a step is real where some feature differs from mask_value."""
    differs = g.op("Cast", [g.op("Not", [g.op("Equal", [x, g.const(node.mask_value)])])], to=TensorProto.INT32)
    return g.op("Cast", [g.op("ReduceMax", [differs, g.ints([-1])], keepdims=0)], to=TensorProto.BOOL)


def embedding(node: s.Embedding, site: Site, g: Graph, x: str) -> str:
    """Token ids [B, T] (int32 or int64) -> the rows of the canonical `embeddings` [input_dim, output_dim]."""
    return g.op("Gather", [g.const(site.w("embeddings"), "embeddings"), x], axis=0)


def _embedding_mask(node: s.Embedding, site: Site, g: Graph, x: str) -> Optional[str]:
    """[B, T] bool, ids != 0, with mask_zero; None otherwise."""
    if not node.mask_zero:
        return None
    return g.op("Not", [g.op("Equal", [x, g.const(0, "padding_id", dtype=site.spec.input.dtype)])])


# The mask a mask-making node (mask rule `makes`) gives, from its input: the other half of its builder.
MASKS: dict[type, Callable[..., Optional[str]]] = {s.Masking: _masking_mask, s.Embedding: _embedding_mask}


def mask_of(node, site: Site, g: Graph, x: str) -> Optional[str]:
    """The mask `node` makes from its input `x` ([B, T] bool, or None), through MASKS."""
    if type(node) not in MASKS:
        raise s.BackendError(f"{site.where()}: the onnx target has no mask for {node.type!r}: add one to MASKS in {__name__.replace('.', '/')}.py")
    return MASKS[type(node)](node, site, g, x)


# --- padding, cropping and upsampling along time ------------------------------------------------


def zero_padding1d(node: s.ZeroPadding1D, site: Site, g: Graph, x: str) -> str:
    left, right = node.padding
    if left == right == 0:
        return x
    return g.op("Pad", [x, g.ints([left, right]), "", g.ints([1])])


def cropping1d(node: s.Cropping1D, site: Site, g: Graph, x: str) -> str:
    left, right = node.cropping
    return g.slice(x, left, -right if right else INT64_MAX, axis=1)


def upsampling1d(node: s.UpSampling1D, site: Site, g: Graph, x: str) -> str:
    # [B, T, F] -> [B, T, 1, F] -> [B, T, size, F] -> [B, T*size, F]: each step repeated in place.
    repeated = g.op("Expand", [g.unsqueeze(x, 2), g.ints([1, 1, node.size, 1])])
    return g.op("Reshape", [repeated, g.ints([0, -1, site.n_in])])


BUILDERS = s.Table(
    BACKEND_NAME,
    "builder",
    "BUILDERS",
    __name__,
    {
        s.SimpleRNN: recurrent,
        s.LSTM: recurrent,
        s.GRU: recurrent,
        s.RNN: recurrent,
        s.Bidirectional: bidirectional,
        s.SimpleRNNCell: _cell,
        s.LSTMCell: _cell,
        s.GRUCell: _cell,
        s.LNSimpleRNNCell: _cell,
        s.PeepholeLSTMCell: _cell,
        s.Dense: dense,
        s.TimeDistributed: time_distributed,
        s.Flatten: flatten,
        s.RepeatVector: repeat_vector,
        s.Dropout: dropout,
        s.ActivationLayer: activation,
        s.BatchNorm: batch_norm,
        s.LayerNorm: layer_norm,
        s.Conv1D: conv1d,
        s.MaxPool1D: max_pool1d,
        s.AvgPool1D: avg_pool1d,
        s.GlobalMaxPool1D: global_max_pool1d,
        s.GlobalAvgPool1D: global_avg_pool1d,
        s.WaveNet: wavenet,
        s.ZeroPadding1D: zero_padding1d,
        s.Cropping1D: cropping1d,
        s.UpSampling1D: upsampling1d,
        s.Masking: masking,
        s.Embedding: embedding,
    },
)
