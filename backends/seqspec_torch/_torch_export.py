"""The torch-export target of `seqspec export`: a torch.export ExportedProgram (.pt2) with dynamic batch and time.

torch.export cannot trace nn.LSTM / nn.GRU / nn.RNN over a dynamic time length (pytorch issue
126339), nor a Python loop over the steps (the loop's trip count would be frozen at the example's
length). Here every recurrent layer of the torch backend's model is swapped, for export only, for
the same cell written as one step function under torch's scan higher-order op
(torch._higher_order_ops.scan), which torch.export keeps as one `scan` node whose length is the
input's symbolic time dimension. The step functions read the backend's own parameters (the
model is seqspec_torch's backend.build(spec, weights)), so the weights are the canonical ones,
mapped once, by the backend's own Bindings.

Everything else in the model (convolutions with TensorFlow's padding, pools, norms, dense
layers) traces as it is: their pads are arithmetic on the symbolic length.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch._higher_order_ops.scan import scan

import seqspec
from seqspec import BackendError, Spec

from . import _cells as c
from ._backend import backend

RUNNER = pathlib.Path(__file__).with_name("_run_torch_export.py")
SUFFIX = ".pt2"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The example lengths the program is traced at: the longest a spec accepts among these (a trace
# at one step would let torch specialise the length to 1).
_EXAMPLE_LENGTHS = (7, 16, 64, 500)
_EXAMPLE_BATCH = 3


def needs_fixed_shape(spec: Spec, dtype: str) -> Optional[str]:
    """None when the program takes any batch and any length the spec accepts; otherwise why the
    length must be fixed at export.

    torch.export proves each shape guard of the trace for the whole range of the time dimension.
    Two kinds of layer make guards it cannot prove: a layer whose output length is not the input
    length plus a constant (a strided convolution or pool, upsampling: floor divisions and
    products of the length), and one that shortens the sequence to a single step at the
    shortest length the model takes (torch specialises a length of 1, so the range would start
    above it). Both are found from the core's shape rules, without tracing.
    """
    if _vector(spec) or spec.input.shape[0] is not None:
        return None
    shortest = _shortest(spec)
    offsets: dict[int, set] = {}  # layer -> its output length minus its input length, at each length tried
    for t in (shortest, shortest + 1, shortest + 2, shortest + 3, 64, 65, 66, 67):
        lengths = _lengths(spec, t)
        for i, (before, after) in enumerate(zip([t] + (lengths or [])[:-1], lengths or [])):
            if before is not None and after is not None:
                offsets.setdefault(i, set()).add(after - before)
    for i, seen in sorted(offsets.items()):
        if len(seen) > 1:
            return (
                f"{spec.locate('layers', i)}: torch-export: the output length of this layer is not its input length "
                f"plus a constant (a stride or upsampling), which torch.export cannot trace for every length"
            )
    for i, n in enumerate(_lengths(spec, shortest) or []):
        if shortest > 1 and n == 1:
            return (
                f"{spec.locate('layers', i)}: torch-export: this layer shortens the shortest input ({shortest} steps) "
                f"to 1 step, a length torch.export specialises, so no range of lengths covers every length the model takes"
            )
    return None


def _lengths(spec: Spec, t: int) -> Optional[list[Optional[int]]]:
    """Each layer's output length for an input of t steps (None for a vector output), or None if the model refuses t."""
    if not _accepts(spec, t):
        return None
    return [li.output_shape[1] if len(li.output_shape) == 3 else None for li in seqspec.infer(_at_length(spec, t)).layers]


def _shortest(spec: Spec) -> int:
    shortest = next((t for t in range(1, 10_000) if _accepts(spec, t)), None)
    if shortest is None:
        raise BackendError(f"{spec.locate('input', 'shape')}: torch-export: no input length up to 10,000 steps gives every layer a step")
    return shortest


def _step_simple_rnn(cell: c.SimpleRNNCell | c.LNSimpleRNNCell):
    """(xp [B, T, u] the input part of every step, the step function, its initial carry)."""
    weight_ih, weight_hh, bias, _ = cell.tensors()
    act = cell.activation
    if isinstance(cell, c.LNSimpleRNNCell):
        # As the backend's inference loop: the recurrence in float64 whatever the model's dtype.
        wide = c.LN_RECURRENCE_DTYPE
        w_hh, gamma, beta = weight_hh.to(wide), cell.gamma.to(wide), cell.beta.to(wide)
        u, eps = cell.units, cell.epsilon

        def prepare(x):
            return F.linear(x.to(wide), weight_ih.to(wide), None if bias is None else bias.to(wide))

        def step(h, xp_t):
            h = act(F.layer_norm(xp_t + F.linear(h, w_hh), (u,), gamma, beta, eps))
            return h, h.clone()

        return prepare, step, (1,)

    def prepare(x):
        return F.linear(x, weight_ih, bias)

    def step(h, xp_t):
        h = act(xp_t + F.linear(h, weight_hh))
        return h, h.clone()

    return prepare, step, (1,)


def _step_lstm(cell: c.LSTMCell | c.PeepholeLSTMCell):
    """The LSTM step of _cells._lstm_loop (gates i, f, g, o; peepholes when the cell has them)."""
    weight_ih, weight_hh, bias, _ = cell.tensors()
    act, ract = cell.activation, cell.recurrent_activation
    peephole = isinstance(cell, c.PeepholeLSTMCell)

    def prepare(x):
        return F.linear(x, weight_ih, bias)

    def step(carry, xp_t):
        h, cs = carry
        zi, zf, zg, zo = (xp_t + F.linear(h, weight_hh)).chunk(4, dim=1)
        if peephole:
            zi, zf = zi + cell.peephole_i * cs, zf + cell.peephole_f * cs
        cs = ract(zf) * cs + ract(zi) * act(zg)
        if peephole:
            zo = zo + cell.peephole_o * cs
        h = ract(zo) * act(cs)
        return (h, cs), h.clone()

    return prepare, step, (2,)


def _step_gru(cell: c.GRUCell | c.GRUResetBeforeCell):
    """The GRU step of _cells._gru_loop (gates r, z, n), reset after or before the recurrent matmul."""
    weight_ih, weight_hh, bias_ih, bias_hh = cell.tensors()
    act, ract, u = cell.activation, cell.recurrent_activation, cell.units
    reset_after = isinstance(cell, c.GRUCell)

    def prepare(x):
        return F.linear(x, weight_ih, bias_ih)

    def step(h, xp_t):
        xr, xz, xn = xp_t.chunk(3, dim=1)
        if reset_after:
            hp = F.linear(h, weight_hh, bias_hh)
            hr, hz, hn = hp.chunk(3, dim=1)
            r, z = ract(xr + hr), ract(xz + hz)
            n = act(xn + r * hn)
        else:
            hr, hz = F.linear(h, weight_hh[: 2 * u]).chunk(2, dim=1)
            r, z = ract(xr + hr), ract(xz + hz)
            n = act(xn + F.linear(r * h, weight_hh[2 * u :]))
        h = z * h + (1 - z) * n
        return h, h.clone()

    return prepare, step, (1,)


_STEPS = {
    c.SimpleRNNCell: _step_simple_rnn,
    c.LNSimpleRNNCell: _step_simple_rnn,
    c.LSTMCell: _step_lstm,
    c.PeepholeLSTMCell: _step_lstm,
    c.GRUCell: _step_gru,
    c.GRUResetBeforeCell: _step_gru,
}


class ScanRecurrent(nn.Module):
    """A backend Recurrent layer (inference only) as one scan over time: [B, T, F] -> [B, T, units] or [B, units].

    Holds the original layer, so its parameters (and their canonical names' bindings) are the
    backend's; computes what Recurrent.forward computes in eval mode.
    """

    takes = gives = "channels_last"

    def __init__(self, layer: c.Recurrent):
        super().__init__()
        self.layer = layer
        self.make_step = _STEPS[type(layer.cell)]

    @property
    def return_sequences(self) -> bool:  # Bidirectional reads it to flip the backward pass back
        return self.layer.return_sequences

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        layer, dtype = self.layer, x.dtype
        # The step reads the cell's parameters here, at each call, not when the module is made:
        # torch.export swaps the parameters for traced ones while it traces.
        prepare, step, (carries,) = self.make_step(layer.cell)
        if layer.go_backwards:  # as Recurrent: read from the end, outputs in the order read
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        xp = prepare(x).transpose(0, 1)  # [T, B, G*u]: scan walks dim 0
        h0 = xp.new_zeros(x.shape[0], layer.cell.units)
        init = h0 if carries == 1 else tuple(h0.clone() for _ in range(carries))
        if mask is None:
            _, seq = scan(step, init, xp)
        else:
            # As Recurrent.sequence's step loop: a masked step keeps every state as it was, so its
            # output is the last real step's (zeros before the first one).
            def masked(carry, inputs):
                xp_t, m_t = inputs
                new, _ = step(carry, xp_t)
                if carries == 1:
                    kept = torch.where(m_t, new, carry)
                    return kept, kept.clone()
                kept = tuple(torch.where(m_t, a, b) for a, b in zip(new, carry))
                return kept, kept[0].clone()

            _, seq = scan(masked, init, (xp, mask.transpose(0, 1).unsqueeze(-1)))
        seq = seq.transpose(0, 1).to(dtype)  # [B, T, u]
        if mask is not None and layer.zero_output_for_mask and layer.return_sequences:
            seq = torch.where(mask.unsqueeze(-1), seq, 0)
        if not layer.return_sequences:
            return seq[:, -1]
        return seq


def _scanned(module: nn.Module) -> nn.Module:
    """`module` with every Recurrent (top level or inside a Bidirectional) replaced by a ScanRecurrent."""
    if isinstance(module, c.Recurrent):
        return ScanRecurrent(module)
    if isinstance(module, c.Bidirectional):
        module.forward_layer = _scanned(module.forward_layer)
        module.backward_layer = _scanned(module.backward_layer)
    return module


def exportable_module(spec: Spec, weights: dict[str, np.ndarray], dtype: str) -> nn.Module:
    """The torch backend's model of `spec` in `dtype` with `weights`, its recurrent layers as scans, in eval mode."""
    spec = _with_dtype(spec, dtype)
    model = backend.build(spec, {name: np.asarray(a, dtype=dtype) for name, a in weights.items()})
    for i, layer in enumerate(model.layers):
        model.layers[i] = _scanned(layer)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _with_dtype(spec: Spec, dtype: str) -> Spec:
    if dtype == spec.dtype:
        return spec
    copy = spec.model_copy(update={"dtype": dtype})
    copy._source = spec._source
    return copy


def _accepts(spec: Spec, t: int) -> bool:
    """Whether the spec's model takes `t` steps (every layer's output keeps at least one step)."""
    try:
        info = seqspec.infer(_at_length(spec, t))
    except seqspec.ShapeError:
        return False
    return all(d is None or d >= 1 for li in info.layers for d in li.output_shape[1:])


def _vector(spec: Spec) -> bool:
    """Whether the input is a vector [batch, features] (token ids [batch, time] are not)."""
    return len(spec.input.shape) == 1 and not spec.input.tokens


def _at_length(spec: Spec, t: int) -> Spec:
    """`spec` with its input's length fixed at `t` steps."""
    return spec.model_copy(update={"input": spec.input.model_copy(update={"shape": [t, *spec.input.shape[1:]]})})


def _example_and_dims(spec: Spec, shape: Optional[tuple[int, ...]]):
    """The example input's shape and torch.export's dynamic_shapes for it."""
    features = spec.input.shape[-1]
    if shape is not None:
        return tuple(shape), None
    if _vector(spec):
        return (_EXAMPLE_BATCH, features), ({0: torch.export.Dim("batch")},)
    batch = torch.export.Dim("batch")
    rest = () if spec.input.tokens else (features,)  # token ids [batch, time] have no feature axis
    if spec.input.shape[0] is not None:
        return (_EXAMPLE_BATCH, spec.input.shape[0], *rest), ({0: batch},)
    shortest = _shortest(spec)
    example = next((t for t in _EXAMPLE_LENGTHS if t > shortest and _accepts(spec, t)), shortest)
    # The time dimension's range starts at the shortest length the model takes: below it a
    # convolution's output would have no step, which torch.export would refuse to trace as possible.
    time = torch.export.Dim("time", min=shortest)
    return (_EXAMPLE_BATCH, example, *rest), ({0: batch, 1: time},)


def export_program(spec: Spec, weights: dict[str, np.ndarray], dtype: str, shape: Optional[tuple[int, ...]] = None):
    """The torch.export.ExportedProgram of `spec` (see export_artifact)."""
    model = exportable_module(spec, weights, dtype)
    example_shape, dynamic = _example_and_dims(spec, shape)
    x = torch.zeros(example_shape, dtype=getattr(torch, spec.input.dtype) if spec.input.tokens else _DTYPES[dtype])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scan is a prototype: torch warns on every trace
            return torch.export.export(model, (x,), dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # torch's export errors run to pages: keep the first line, located
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BackendError(f"{spec.locate('layers')}: torch-export cannot trace this model: {type(e).__name__}: {first}") from None
    finally:
        torch._dynamo.reset()  # a failed trace leaves state that makes the next export fail


def export_artifact(spec: Spec, weights: dict[str, np.ndarray], path: pathlib.Path, dtype: str, shape: Optional[tuple[int, ...]] = None) -> list[str]:
    """Write a torch.export program (.pt2, torch.export.save) of `spec` with `weights` at `path`.

    The program takes x [batch, time, features] (or [batch, features]) in `dtype` and returns the
    model's output; batch and time are dynamic unless `shape` fixes them (a spec's fixed length
    stays fixed). torch.export.load(path).module()(x) runs it with torch alone.
    """
    reason = needs_fixed_shape(spec, dtype)
    if shape is None:
        if reason is not None:
            raise BackendError(f"{reason}: export it with a fixed input shape")
    program = export_program(spec, weights, dtype, shape)
    with open(path, "wb") as f:  # a file object: torch names the archive's root after a path
        torch.export.save(program, f)
    notes = [f"torch-export: {_describe_axes(spec, shape)}, {dtype}; recurrent layers traced as torch scan loops (torch.export.load(path).module() runs it)"]
    if shape is not None and reason is not None:
        notes.append(f"torch-export: input fixed at {list(shape)}: {reason}")
    return notes


def _describe_axes(spec: Spec, shape: Optional[tuple[int, ...]]) -> str:
    if shape is not None:
        return f"input fixed at {list(shape)}"
    if _vector(spec):
        return f"input [batch, {spec.input.shape[0]}] with batch dynamic"
    rest, ids = ("", f" of {spec.input.dtype} token ids") if spec.input.tokens else (f", {spec.input.shape[1]}", "")
    if spec.input.shape[0] is not None:
        return f"input [batch, {spec.input.shape[0]}{rest}]{ids} with batch dynamic (the spec fixes the length)"
    return f"input [batch, time{rest}]{ids} with batch and time dynamic"
