"""Reading a torch.export program (.pt2) into spec layers and canonical weights: one handler per aten op, sharing the fx reader's conversions."""

from __future__ import annotations

import copy
import dataclasses
import operator
import pathlib
import warnings
from typing import Any, Callable, Optional

import numpy as np
import sympy
import torch
from torch import fx

import seqspec as s

from . import _import as fxr
from ._import import BFT, BTF, TBF, Reader, Recurrence, Value, flat_weight_names

aten = torch.ops.aten

_FLOATS = {torch.float32: "float32", torch.float64: "float64"}
_TOKENS = {torch.int32: "int32", torch.int64: "int64"}
# A slice's end torch writes for `x[a:]`: anything this large is "to the end".
_TO_THE_END = 2**62


@dataclasses.dataclass
class Dim:
    """One dimension of the program's input: a fixed size, or a symbol with the range torch.export proved for it."""

    size: Optional[int]  # None: dynamic
    low: int = 0
    high: Optional[int] = None  # None: unbounded

    def bounds(self) -> tuple[int, Optional[int]]:
        return (self.size, self.size) if self.size is not None else (self.low, self.high)

    def takes(self, n: int) -> bool:
        return self.size == n if self.size is not None else self.low <= n and (self.high is None or n <= self.high)

    def __str__(self) -> str:
        return str(self.size) if self.size is not None else f"{self.low}..{'' if self.high is None else self.high} (dynamic)"


class ProgramReader(Reader):
    """Walks an ExportedProgram's graph (aten ops) in order, as Reader walks an fx graph of modules."""

    def __init__(self, program, input_name: str, input_shape: list, input_dtype: Optional[str], dtype: str, cast: Optional[torch.dtype] = None):
        super().__init__(program.graph_module, input_shape, input_dtype, dtype)
        self.program = program
        self.input_name = input_name
        self.cast = cast  # read every parameter in this dtype (the float64 proof's weights)
        sig = program.graph_signature
        self.lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}

    def label(self, node: fx.Node) -> str:
        op = getattr(node.target, "__name__", str(node.target)) if node.op == "call_function" else node.op
        op = {"getitem": "operator.getitem"}.get(op, op)
        if isinstance(node.target, torch._ops.OpOverload):
            op = f"aten.{node.target.__name__}" if node.target.namespace == "aten" else str(node.target)
        where = _module_path(node)
        return f"torch node {node.name!r} ({op}){where}"

    def param(self, name: str) -> torch.Tensor:
        target = self.lifted[name]
        t = self.program.state_dict[target] if target in self.program.state_dict else self.program.constants[target]
        t = t.detach()
        return t.to(self.cast) if self.cast is not None and t.is_floating_point() else t

    def run(self) -> Value:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if n.name in self.lifted:
                    self.values[n] = Value("tensor", tensor=self.param(n.name))
                elif n.name == self.input_name:
                    self.values[n] = self.input_value()
                elif n.users:
                    self.refuse(n, "a second input; a spec model has one input")
            elif n.op == "output":
                outs = list(n.args[0])  # the user's outputs and, after them, buffer mutations
                user = self.program.graph_signature.user_outputs
                if len(user) != 1 or len(outs) != 1:
                    what = "mutates a buffer (exported in training mode?)" if len(user) == 1 else f"returns {len(user)} tensors"
                    self.refuse(n, f"the program {what}; a spec model returns one tensor")
                return self.output(n, outs[0])
            elif n.op == "get_attr":  # a higher-order op's subgraph (scan, cond, while_loop): refused where it is called
                self.values[n] = Value("subgraph")
            elif not n.users and not _mutates(n):  # unused state of a recurrent op, _assert_tensor_metadata ...
                continue
            else:
                self.values[n] = self.node(n)
        raise s.ImportRefused("the program's graph has no output")

    def node(self, n: fx.Node) -> Value:
        handler = ATEN.get(n.target)
        if handler is None:
            if _op_name(n) == "scan":
                self.refuse(n, "a scan loop (how seqspec's own torch-export artifacts write a recurrent layer) has no spec equivalent: its body is a graph of its own, a cell step by step, not a layer; import the spec itself, or the module the program came from")
            if _op_name(n) in ("while_loop", "cond", "map_impl"):
                self.refuse(n, f"a {_op_name(n)} higher-order op has no spec equivalent: its body is a graph of its own, not a layer")
            self.refuse(n, "has no spec equivalent (the aten ops that map are listed in docs/import.md)")
        return handler(self, n)

    def arg(self, n: fx.Node, index: int, name: str, default: Any = None) -> Any:
        """An op's argument by position or keyword (export writes the defaults it omits as neither)."""
        if len(n.args) > index:
            return n.args[index]
        return n.kwargs.get(name, default)


def _op_name(n: fx.Node) -> str:
    return getattr(n.target, "__name__", str(n.target)).split(".")[0]


def _mutates(n: fx.Node) -> bool:
    schema = getattr(n.target, "_schema", None)
    return n.op == "call_function" and schema is not None and schema.is_mutable


def _module_path(node: fx.Node) -> str:
    """' in module PATH (Class)': the innermost module the node was traced in (node.meta["nn_module_stack"])."""
    stack = [v for v in (node.meta.get("nn_module_stack") or {}).values() if not str(v[0]).startswith("_empty_nn_module_stack")]
    if not stack:
        return ""
    path, cls = stack[-1][0], stack[-1][1]
    cls = getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
    return f" in module {path!r} ({cls})" if path else f" in the top module ({cls})"


# --- handlers -----------------------------------------------------------------------------------


def _x(r: ProgramReader, n: fx.Node, index: int = 0) -> Value:
    return r.value(n, n.args[index])


def recurrent(kind: str, nonlinearity: str = "tanh") -> Callable:
    """aten.lstm/gru/rnn_tanh/rnn_relu.input(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)."""

    def handler(r: ProgramReader, n: fx.Node) -> Value:
        x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first = n.args
        for h in hx if isinstance(hx, (list, tuple)) else [hx]:
            if r.values.get(h, Value("")).kind != "zeros":
                r.refuse(n, "is given an initial state; a spec recurrent layer starts from zeros")
        names = flat_weight_names(num_layers, bidirectional, has_biases)
        if len(params) != len(names):
            r.refuse(n, f"has {len(params)} parameters where {kind} with these flags has {len(names)}: proj_size (a projected LSTM) has no spec equivalent")
        if train and dropout:
            r.refuse(n, f"runs with train=True and dropout={dropout}: the program was exported in training mode; export the module after .eval()")
        tensors = {name: r.tensor(n, p) for name, p in zip(names, params)}
        return fxr.recurrent_layers(r, n, _x(r, n), Recurrence(kind, tensors, num_layers, bidirectional, batch_first, bool(has_biases), float(dropout), nonlinearity))

    return handler


def zeros(r: ProgramReader, n: fx.Node) -> Value:
    """The zeros an nn.RNN/LSTM/GRU starts from: only an initial state may use them."""
    return Value("zeros")


def size(r: ProgramReader, n: fx.Node) -> Value:
    return Value("size")


def select(r: ProgramReader, n: fx.Node) -> Value:
    """x[:, -1] (aten.select(x, 1, -1)) or, time-first, x[-1]: the last step; [..., 0] of a global pool."""
    v, dim, index = _x(r, n), n.args[1], n.args[2]
    if v.kind == "seq" and index == -1 and ((v.layout == BTF and dim % 3 == 1) or (v.layout == TBF and dim % 3 == 0)):
        return fxr.last_step(r, n, v)
    if v.kind == "pooled" and dim % 3 == 2 and index in (0, -1):
        return Value("vec")
    r.refuse(n, f"selects index {index} of dim {dim} of a {v.kind}; only the last step x[:, -1] maps")


def slice_(r: ProgramReader, n: fx.Node) -> Value:
    """A full slice x[:, :] is no layer; any other slice is refused."""
    v = _x(r, n)
    start, end, step = r.arg(n, 2, "start", None), r.arg(n, 3, "end", None), r.arg(n, 4, "step", 1)
    if start in (None, 0) and (end is None or (isinstance(end, int) and end >= _TO_THE_END)) and step == 1:
        return dataclasses.replace(v)
    r.refuse(n, f"slices {start}:{end}:{step} of dim {n.args[1]}; only the last step x[:, -1] maps")


def identity(r: ProgramReader, n: fx.Node) -> Value:
    return dataclasses.replace(_x(r, n))


def to_dtype(r: ProgramReader, n: fx.Node) -> Value:
    """x.to(dtype) to the dtype x already has is no layer (seqspec's own programs write it)."""
    before, after = n.args[0].meta.get("val"), n.meta.get("val")
    if before is None or after is None or before.dtype != after.dtype:
        r.refuse(n, "converts to another dtype; a spec model has one dtype")
    return dataclasses.replace(_x(r, n))


def linear(r: ProgramReader, n: fx.Node) -> Value:
    return fxr.dense(r, n, _x(r, n), r.tensor(n, n.args[1]), r.tensor(n, r.arg(n, 2, "bias")))


def conv1d(r: ProgramReader, n: fx.Node) -> Value:
    """aten.conv1d(x, weight, bias, stride, padding, dilation, groups), padding a list or a string."""
    a = [r.arg(n, i, name, d) for i, (name, d) in enumerate((("input", None), ("weight", None), ("bias", None), ("stride", [1]), ("padding", [0]), ("dilation", [1]), ("groups", 1)))]
    return fxr.conv1d(r, n, _x(r, n), r.tensor(n, a[1]), r.tensor(n, a[2]), a[3], a[4], a[5], a[6])


def pad(r: ProgramReader, n: fx.Node) -> Value:
    """aten.pad(x, pad, mode, value) and aten.constant_pad_nd(x, pad, value)."""
    if n.target is aten.constant_pad_nd.default:
        return fxr._pad(r, n, _x(r, n), n.args[1], "constant", r.arg(n, 2, "value", 0))
    return fxr._pad(r, n, _x(r, n), n.args[1], r.arg(n, 2, "mode", "constant"), r.arg(n, 3, "value", None))


def max_pool1d(r: ProgramReader, n: fx.Node) -> Value:
    a = [r.arg(n, i, name, d) for i, (name, d) in enumerate((("self", None), ("kernel_size", None), ("stride", []), ("padding", 0), ("dilation", 1), ("ceil_mode", False)))]
    return fxr._pool_doc(r, n, "max_pool1d", a[1], a[2] or None, a[3], a[4], a[5])


def avg_pool1d(r: ProgramReader, n: fx.Node) -> Value:
    a = [r.arg(n, i, name, d) for i, (name, d) in enumerate((("self", None), ("kernel_size", None), ("stride", []), ("padding", 0), ("ceil_mode", False), ("count_include_pad", True)))]
    return fxr._pool_doc(r, n, "avg_pool1d", a[1], a[2] or None, a[3], 1, a[4])


def global_pool(kind: str, with_indices: bool = False) -> Callable:
    def handler(r: ProgramReader, n: fx.Node) -> Value:
        out = fxr.global_pool(r, n, _x(r, n), kind, n.args[1])
        return Value("tuple", first=out) if with_indices else out

    return handler


def batch_norm(r: ProgramReader, n: fx.Node) -> Value:
    """aten.batch_norm(x, weight, bias, mean, var, training, momentum, eps, cudnn) with training False,
    and its inference decomposition aten._native_batch_norm_legit_no_training(x, weight, bias, mean, var, momentum, eps)."""
    if n.target is aten.batch_norm.default:
        x, weight, bias, mean, var, training, momentum, eps = n.args[:8]
        if training or mean is None:
            r.refuse(n, "normalises with each batch's statistics (training mode, or track_running_stats=False); a spec batch_norm uses its moving statistics")
        return fxr.batch_norm(r, n, _x(r, n), r.tensor(n, weight), r.tensor(n, bias), r.tensor(n, mean), r.tensor(n, var), float(momentum), float(eps))
    x, weight, bias, mean, var, momentum, eps = n.args[:7]
    out = fxr.batch_norm(r, n, _x(r, n), r.tensor(n, weight), r.tensor(n, bias), r.tensor(n, mean), r.tensor(n, var), float(momentum), float(eps))
    return Value("tuple", first=out)


def layer_norm(r: ProgramReader, n: fx.Node) -> Value:
    shape, weight, bias, eps = (r.arg(n, i, name, d) for i, name, d in ((1, "normalized_shape", None), (2, "weight", None), (3, "bias", None), (4, "eps", 1e-5)))
    return fxr.layer_norm(r, n, _x(r, n), tuple(shape), r.tensor(n, weight), r.tensor(n, bias), float(eps))


def dropout(r: ProgramReader, n: fx.Node) -> Value:
    """aten.dropout(x, p, train): nn.Dropout of a module in eval() (train False) is a dropout layer, as in the fx reader."""
    v, p, train = _x(r, n), n.args[1], n.args[2]
    if train:
        r.refuse(n, "runs with train=True: the program was exported in training mode (or calls F.dropout(training=True)); export the module after .eval()")
    if p >= 1:
        r.refuse(n, f"p={p}: a spec dropout rate is below 1")
    return r.emit({"type": "dropout", "rate": float(p)}, kind=v.kind, layout=v.layout) if p else dataclasses.replace(v)


def flatten(r: ProgramReader, n: fx.Node) -> Value:
    start, end = r.arg(n, 1, "start_dim", 0), r.arg(n, 2, "end_dim", -1)
    if (start, end) != (1, -1):
        r.refuse(n, f"start_dim={start}, end_dim={end}; only flatten(x, 1) maps")
    return fxr._flatten(r, n)


def reshape(r: ProgramReader, n: fx.Node) -> Value:
    """x.reshape(batch, -1) / x.view(...) that keeps the batch and joins the rest: flatten."""
    before, after = n.args[0].meta.get("val"), n.meta.get("val")
    if before is not None and after is not None and after.dim() == 2 and before.dim() >= 2 and str(after.shape[0]) == str(before.shape[0]):
        return fxr._flatten(r, n)
    shape = tuple(getattr(a, "shape", a) for a in [before, after])
    r.refuse(n, f"reshapes {shape[0]} to {shape[1]}; only flattening everything after the batch maps")


def unsqueeze(r: ProgramReader, n: fx.Node) -> Value:
    return fxr.unsqueeze(r, n)


def squeeze(r: ProgramReader, n: fx.Node) -> Value:
    v, dims = _x(r, n), n.args[1] if len(n.args) > 1 else None
    dims = dims[0] if isinstance(dims, (list, tuple)) and len(dims) == 1 else dims
    if v.kind == "pooled" and dims in (2, -1):
        return Value("vec")
    r.refuse(n, f"squeezes dim {dims!r} of a {v.kind}; only the length-1 axis of a global pool maps")


def reduce(kind: str) -> Callable:
    """aten.mean.dim(x, dims, keepdim) / aten.amax(x, dims, keepdim) over time: a global pool."""

    def handler(r: ProgramReader, n: fx.Node) -> Value:
        v, dims, keepdim = _x(r, n), r.arg(n, 1, "dim"), r.arg(n, 2, "keepdim", False)
        dim = dims[0] if isinstance(dims, (list, tuple)) and len(dims) == 1 else dims
        time_dim = {BTF: 1, TBF: 0, BFT: 2}.get(v.layout) if v.kind == "seq" else None
        if time_dim is None or not isinstance(dim, int) or dim % 3 != time_dim or keepdim or n.kwargs.get("dtype") is not None:
            r.refuse(n, f"reduces dim={dims!r}; only a reduction over the time axis (a global pool) maps")
        return r.emit({"type": kind}, kind="vec")

    return handler


def upsample_nearest1d(r: ProgramReader, n: fx.Node) -> Value:
    """aten.upsample_nearest1d.vec(x, output_size, scale_factors)."""
    return fxr.upsample(r, n, _x(r, n), "nearest", n.args[1], n.args[2])


def embedding(r: ProgramReader, n: fx.Node) -> Value:
    """aten.embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse); max_norm shows as an
    aten.embedding_renorm_ before it, refused there."""
    weight, indices = n.args[0], n.args[1]
    padding_idx, scale, sparse = r.arg(n, 2, "padding_idx", -1), r.arg(n, 3, "scale_grad_by_freq", False), r.arg(n, 4, "sparse", False)
    return fxr.embedding(r, n, r.value(n, indices), r.tensor(n, weight), padding_idx, None, scale, sparse)


def embedding_renorm(r: ProgramReader, n: fx.Node) -> Value:
    r.refuse(n, f"max_norm={n.args[2]} renormalises the rows an nn.Embedding looks up in the forward pass; the spec's embedding has no equivalent")


def activation(name: Any, names: tuple = (), defaults: Optional[dict] = None, check: Callable = lambda a: None) -> Callable:
    """An aten activation: its arguments after the tensor by name, checked, then the fx reader's activation."""

    def handler(r: ProgramReader, n: fx.Node) -> Value:
        a = {**(defaults or {}), **dict(zip(names, n.args[1:])), **n.kwargs}
        why = check(a)
        if why:
            r.refuse(n, why)
        return fxr._activation_value(r, n, name(a) if callable(name) else name, a.get("dim"))

    return handler


def _elu_check(a: dict) -> Optional[str]:
    return None if (a["alpha"], a["scale"], a["input_scale"]) == (1, 1, 1) else f"alpha={a['alpha']}, scale={a['scale']}, input_scale={a['input_scale']} has no spec equivalent (elu with alpha 1)"


ATEN: dict[Any, Callable] = {
    operator.getitem: fxr.getitem,
    aten.lstm.input: recurrent("lstm"),
    aten.gru.input: recurrent("gru"),
    aten.rnn_tanh.input: recurrent("simple_rnn", "tanh"),
    aten.rnn_relu.input: recurrent("simple_rnn", "relu"),
    aten.zeros.default: zeros,
    aten.new_zeros.default: zeros,
    aten.zeros_like.default: zeros,
    aten.sym_size.int: size,
    aten.select.int: select,
    aten.slice.Tensor: slice_,
    aten.clone.default: identity,
    aten.contiguous.default: identity,
    aten.alias.default: identity,
    aten.detach.default: identity,
    aten.to.dtype: to_dtype,
    aten.linear.default: linear,
    aten.conv1d.default: conv1d,
    aten.conv1d.padding: conv1d,
    aten.pad.default: pad,
    aten.constant_pad_nd.default: pad,
    aten.max_pool1d.default: max_pool1d,
    aten.avg_pool1d.default: avg_pool1d,
    aten.adaptive_avg_pool1d.default: global_pool("global_avg_pool1d"),
    aten.adaptive_max_pool1d.default: global_pool("global_max_pool1d", with_indices=True),
    aten.batch_norm.default: batch_norm,
    aten._native_batch_norm_legit_no_training.default: batch_norm,
    aten.layer_norm.default: layer_norm,
    aten.dropout.default: dropout,
    aten.flatten.using_ints: flatten,
    aten.reshape.default: reshape,
    aten.view.default: reshape,
    aten.transpose.int: fxr.transpose,
    aten.permute.default: fxr.permute,
    aten.unsqueeze.default: unsqueeze,
    aten.repeat.default: fxr.repeat,
    aten.expand.default: fxr.repeat,
    aten.squeeze.dim: squeeze,
    aten.squeeze.dims: squeeze,
    aten.mean.dim: reduce("global_avg_pool1d"),
    aten.amax.default: reduce("global_max_pool1d"),
    aten.upsample_nearest1d.vec: upsample_nearest1d,
    aten.embedding.default: embedding,
    aten.embedding_renorm_.default: embedding_renorm,
    aten.relu.default: activation("relu"),
    aten.relu_.default: activation("relu"),
    aten.tanh.default: activation("tanh"),
    aten.sigmoid.default: activation("sigmoid"),
    aten.selu.default: activation("selu"),
    aten.silu.default: activation("silu"),
    aten.hardsigmoid.default: activation("hard_sigmoid"),
    aten.elu.default: activation("elu", ("alpha", "scale", "input_scale"), {"alpha": 1, "scale": 1, "input_scale": 1}, _elu_check),
    aten.gelu.default: activation("gelu", ("approximate",), {"approximate": "none"}, fxr._GELU_CHECK),
    aten.softplus.default: activation("softplus", ("beta", "threshold"), {"beta": 1, "threshold": 20}, lambda a: None if a["beta"] == 1 else f"beta={a['beta']} has no spec equivalent"),
    aten.leaky_relu.default: activation(lambda a: fxr._leaky(float(a["negative_slope"])), ("negative_slope",), {"negative_slope": 0.01}),
    aten.softmax.int: activation("softmax", ("dim", "dtype"), {"dtype": None}, lambda a: None if a["dtype"] is None else "softmax with a dtype has no spec equivalent"),
    aten._softmax.default: activation("softmax", ("dim", "half_to_float")),
}


# --- the program ---------------------------------------------------------------------------------


def load(path: str):
    """torch.export.load, one line for what torch refuses."""
    try:
        return torch.export.load(path)
    except Exception as e:  # a zip that is not a program, a newer format, a missing custom op ...
        first = (" ".join(str(e).split()) or type(e).__name__)[:300]
        raise s.ImportRefused(f"{path}: torch.export.load cannot read it ({type(e).__name__}: {first})") from None


def _dim(program, d) -> Dim:
    if isinstance(d, int):
        return Dim(int(d))
    expr = d.node.expr
    if not isinstance(expr, sympy.Symbol):
        return Dim(None, -1)  # a derived dimension (2 * t ...): refused by the caller
    vr = program.range_constraints.get(expr)
    low = _bound(vr.lower) if vr is not None else None
    return Dim(None, low or 0, _bound(vr.upper) if vr is not None else None)


def _bound(value) -> Optional[int]:
    """A range's end as an int; None for torch's int_oo (which int() cannot convert)."""
    try:
        return int(value) if abs(int(value)) < _TO_THE_END else None
    except Exception:  # int_oo, sympy's oo
        return None


def _input(program, path: str) -> tuple[fx.Node, list[Dim], torch.dtype]:
    users = program.graph_signature.user_inputs
    tensors = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in users]
    if len(users) != 1 or len(tensors) != 1 or not isinstance(tensors[0].meta.get("val"), torch.Tensor):
        raise s.ImportRefused(f"{path}: the program takes {len(users)} inputs ({', '.join(map(str, users))}); a spec model takes one tensor")
    node = tensors[0]
    val = node.meta["val"]
    return node, [_dim(program, d) for d in val.shape], val.dtype


def _shape(path: str, dims: list[Dim], tokens: bool, given: Optional[list]) -> list:
    """The spec's input shape (without the batch) from the program's, where --input-shape agrees with it."""
    rest = dims[1:]
    shown = "[" + ", ".join(["batch"] + [str(d) for d in rest]) + "]"
    if any(d.low < 0 for d in dims):
        raise s.ImportRefused(f"{path}: the program's input has a derived dynamic dimension (a multiple or sum of another); a spec's time is free or fixed")
    if len(rest) not in ((1,) if tokens else (1, 2)):
        kind = "[batch, time] of token ids" if tokens else "[batch, time, features] or [batch, features]"
        raise s.ImportRefused(f"{path}: the program's input is {shown}, not {kind}")
    if not tokens and rest[-1].size is None:
        raise s.ImportRefused(f"{path}: the program's input {shown} has a dynamic features axis; a spec's features are fixed")
    shape = [d.size for d in rest]
    if given is None:
        return shape
    if len(given) != len(rest) or any(g is not None and not d.takes(g) for g, d in zip(given, rest)) or any(g is None and d.size is not None for g, d in zip(given, rest)):
        raise s.ImportRefused(f"--input-shape {list(given)}: the program {path} takes {shown}")
    return list(given)


def _float64_twin(gm: fx.GraphModule) -> fx.GraphModule:
    """The program's module with float64 parameters, its float32 constants (the zeros an LSTM starts
    from, `x.to(float32)`) rewritten to float64."""
    with warnings.catch_warnings():  # torch's own pytree deprecation, from deepcopy
        warnings.simplefilter("ignore", FutureWarning)
        wide = copy.deepcopy(gm).double()
    swap = lambda a: torch.float64 if a is torch.float32 else a  # noqa: E731
    for node in wide.graph.nodes:
        node.args = fx.node.map_aggregate(node.args, swap)
        node.kwargs = fx.node.map_aggregate(node.kwargs, swap)
    wide.recompile()
    return wide


def _runner(gm) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return fxr._np(gm(torch.from_numpy(np.ascontiguousarray(x))))

    return run


def read_program(path: str, input_shape: Optional[list] = None) -> s.Imported:
    """A .pt2 file (torch.export.save) as a seqspec.Imported; the proof runs `program.module()` on the
    batches and lengths the program takes (a fixed batch takes only its own)."""
    program = load(path)
    node, dims, input_dtype = _input(program, path)
    if input_dtype not in _FLOATS and input_dtype not in _TOKENS:
        raise s.ImportRefused(f"{path}: the program's input is {input_dtype}: import reads float32 and float64 models, and int32 or int64 token ids")
    tokens = input_dtype in _TOKENS
    shape = _shape(path, dims, tokens, input_shape)
    floats = {str(t.dtype).replace("torch.", "") for t in [*program.state_dict.values(), *program.constants.values()] if isinstance(t, torch.Tensor) and t.is_floating_point()}
    dtype = _FLOATS.get(input_dtype) if not tokens else (floats.pop() if len(floats) == 1 else "float32")
    if floats - {dtype} or dtype not in ("float32", "float64"):
        raise s.ImportRefused(f"{path}: its parameters are {', '.join(sorted(floats | {dtype}))}; a spec model is float32 or float64 throughout")
    token_dtype = _TOKENS.get(input_dtype)
    reader = ProgramReader(program, node.name, shape, token_dtype, dtype)
    reader.run()
    docs = [item.doc for item in reader.items]
    if not docs:
        raise s.ImportRefused(f"{path}: computes nothing the spec can hold (no layers)")
    weights = reader.canonical_weights()
    gm = program.module()
    run = {dtype: _runner(gm)}
    exact = {}
    notes = list(reader.notes)
    if dtype == "float32":
        run["float64"] = _runner(_float64_twin(gm))
        again = ProgramReader(program, node.name, shape, token_dtype, "float64", cast=torch.float64)
        again.run()
        exact["float64"] = again.canonical_weights()
    batch, time = dims[0], (dims[1] if len(dims) == 3 or tokens else None)
    length_range = None if time is None or shape[0] is not None else (time.low, time.high)
    return s.Imported(name=s.spec_name(pathlib.Path(path).stem), input_shape=shape, layers=docs, weights=weights, run=run, dtype=dtype, exact=exact, notes=notes, input_dtype=token_dtype, batch_range=batch.bounds(), length_range=length_range)
