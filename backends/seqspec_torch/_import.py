"""Reading a PyTorch module through torch.fx into spec layers and canonical weights: one handler per module class, function and method."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import operator
import os
import sys
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

import seqspec as s

from ._cells import CANONICAL_TO_TORCH_GRU, TORCH_GRU_GATES, TORCH_LSTM_GATES

# How a torch tensor holds a spec sequence: [batch, time, features] (the spec's own), time first, or channels first.
BTF, TBF, BFT = "batch, time, features", "time, batch, features", "batch, features, time"


@dataclasses.dataclass
class Value:
    """What an fx node's value is, in spec terms."""

    kind: str  # "seq", "vec", "tokens" (the ids [B, T]), "rnn" (an nn.RNN/LSTM/GRU's (output, h) tuple), "pooled" ([B, F, 1]), "unsqueezed" ([B, 1, F])
    layout: str = BTF
    made_by: Optional[int] = None  # the index of the spec layer that produced it, while nothing follows it
    bidirectional: bool = False
    tensor: Optional[torch.Tensor] = None  # kind "tensor": a parameter, buffer or constant of a torch.export program
    first: Optional["Value"] = None  # kind "tuple": what item 0 of an op's tuple holds (the rest is not the model's)


@dataclasses.dataclass
class Item:
    doc: dict
    weights: dict  # local array name -> NumPy array


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class Reader:
    """Walks an fx graph in order, keeping a Value per node and the spec layers emitted so far."""

    def __init__(self, gm: fx.GraphModule, input_shape: list, input_dtype: Optional[str] = None, dtype: str = "float32"):
        self.gm = gm
        self.dtype = dtype  # the model's float dtype
        self.input_shape = input_shape
        self.input_dtype = input_dtype  # int32 / int64 for token ids, else None
        self.items: list[Item] = []
        self.values: dict[fx.Node, Value] = {}
        self.notes: list[str] = []

    # --- helpers -------------------------------------------------------------------------

    def label(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"module {node.target!r} ({type(self.gm.get_submodule(node.target)).__name__})"
        target = node.target if isinstance(node.target, str) else f"{getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}".lstrip(".")
        kind = "method" if node.op == "call_method" else "function"
        return f"torch node {node.name!r} ({kind} {target})"

    def refuse(self, node: fx.Node, why: str):
        raise s.ImportRefused(f"{self.label(node)}: {why}")

    def emit(self, doc: dict, weights: Optional[dict] = None, kind: str = "seq", layout: str = BTF, **extra) -> Value:
        self.items.append(Item(doc, weights or {}))
        return Value(kind, layout, made_by=len(self.items) - 1, **extra)

    def value(self, node: fx.Node, arg: Any) -> Value:
        if not isinstance(arg, fx.Node):
            self.refuse(node, f"takes {arg!r} where a tensor of the chain is expected")
        return self.values[arg]

    def need(self, node: fx.Node, v: Value, kinds=("seq",), layouts=(BTF,), what: str = "") -> None:
        if v.kind not in kinds or (v.kind == "seq" and v.layout not in layouts):
            got = f"a sequence [{v.layout}]" if v.kind == "seq" else {"vec": "a vector [batch, features]", "rnn": "the (output, state) tuple of a recurrent module"}.get(v.kind, v.kind)
            want = " or ".join(f"a sequence [{x}]" for x in layouts) if "seq" in kinds else "a vector"
            self.refuse(node, f"receives {got}; {what or 'it maps to a spec layer only on ' + want}")

    def canonical_weights(self) -> dict[str, np.ndarray]:
        """The weights of the layers emitted, named as the spec's canonical arrays (`layers.{i}.{array}`)."""
        return {f"layers.{i}.{name}": value for i, item in enumerate(self.items) for name, value in item.weights.items()}

    def length(self) -> Optional[int]:
        """The time length after the layers emitted so far (None when free)."""
        if len(self.input_shape) == 1:
            return None
        info = s.infer(self.partial_spec())
        out = info.layers[-1].output_shape if info.layers else (None,) + tuple(self.input_shape)
        return out[1] if len(out) == 3 else None

    def partial_spec(self) -> s.Spec:
        given = {"shape": self.input_shape, **({"dtype": self.input_dtype} if self.input_dtype else {})}
        doc = {"seqspec": 1, "name": "partial", "input": given, "layers": [i.doc for i in self.items]}
        if not doc["layers"]:
            doc["layers"] = [{"type": "dropout", "rate": 0.0}]
        return s.load(json.dumps(doc))

    # --- the walk ------------------------------------------------------------------------

    def run(self) -> Value:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if n is not placeholders[0]:
                    if n.users:
                        self.refuse(n, "a second input; a spec model has one input")
                    continue
                self.values[n] = self.input_value()
            elif not n.users and n.op != "output":  # `out, _ = self.lstm(x)`: the unused state never reaches the output
                continue
            elif n.op == "get_attr":
                self.refuse(n, f"uses the tensor {n.target!r} directly; only modules, functions and methods listed in docs/import.md map")
            elif n.op == "output":
                return self.output(n, n.args[0])
            else:
                self.values[n] = self.node(n)
        raise s.ImportRefused("the module's graph has no output")

    def output(self, n: fx.Node, out: Any) -> Value:
        """The model's output: one tensor, a spec sequence [batch, time, features] or a vector."""
        if not isinstance(out, fx.Node):
            self.refuse(n, "returns a tuple or a constant; a spec model returns one tensor")
        v = self.values[out]
        if v.kind not in ("seq", "vec") or (v.kind == "seq" and v.layout != BTF):
            self.refuse(out, f"is the output but holds {v.kind} [{v.layout}]; a spec model returns [batch, time, features] or [batch, features]")
        return v

    def input_value(self) -> Value:
        return Value("tokens" if self.input_dtype else "seq" if len(self.input_shape) == 2 else "vec", BTF)

    def tensor(self, n: fx.Node, arg: Any) -> Optional[torch.Tensor]:
        """A parameter the op takes (None where it takes none); what the graph computes is refused."""
        if arg is None:
            return None
        v = self.values.get(arg) if isinstance(arg, fx.Node) else None
        if v is None or v.kind != "tensor":
            self.refuse(n, f"takes {getattr(arg, 'name', arg)!r} where a parameter is expected; weights computed in the graph (a parametrization, weight norm) do not map")
        return v.tensor

    def node(self, n: fx.Node) -> Value:
        if n.op == "call_module":
            module = self.gm.get_submodule(n.target)
            handler = next((h for cls, h in MODULES.items() if type(module) is cls), None)
            if handler is None:
                self.refuse(n, "has no spec equivalent (the modules that map are listed in docs/import.md)")
            return handler(self, n, module)
        if n.op == "call_function":
            handler = FUNCTIONS.get(n.target)
        else:
            handler = METHODS.get(n.target)
        if handler is None:
            self.refuse(n, "has no spec equivalent (the functions and methods that map are listed in docs/import.md)")
        return handler(self, n)

    def args(self, n: fx.Node, names: tuple[str, ...], defaults: dict) -> dict:
        """The call's arguments by name: positional ones after the tensor, then keywords."""
        out = dict(defaults)
        out.update(zip(names, n.args[1:]))
        out.update(n.kwargs)
        unknown = set(out) - set(names)
        if unknown:
            self.refuse(n, f"argument {sorted(unknown)[0]!r} has no spec equivalent")
        return out


# --- recurrent modules -------------------------------------------------------------------------


RNN_KINDS = {nn.RNN: "simple_rnn", nn.LSTM: "lstm", nn.GRU: "gru"}


def flat_weight_names(num_layers: int, bidirectional: bool, bias: bool) -> list[str]:
    """The names of an nn.RNN/LSTM/GRU's parameters in torch's flat order (its `_flat_weights`, the
    `params` list of aten.lstm/gru/rnn_*): per layer, per direction, w_ih, w_hh, then b_ih, b_hh."""
    kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    return [f"{k}_l{layer}{suffix}" for layer in range(num_layers) for suffix in ("", "_reverse")[: 1 + bidirectional] for k in kinds]


def _rnn_weights(tensors: dict, kind: str, layer: int, suffix: str, prefix: str) -> dict:
    """Canonical arrays of one layer and direction of an nn.RNN/LSTM/GRU, from its tensors by torch's
    names (`weight_ih_l0`, ...); the two torch biases of RNN and LSTM summed into the one canonical
    bias (the same function), GRU's kept apart."""
    w_ih = tensors[f"weight_ih_l{layer}{suffix}"]
    w_hh = tensors[f"weight_hh_l{layer}{suffix}"]
    b_ih = tensors.get(f"bias_ih_l{layer}{suffix}")
    b_hh = tensors.get(f"bias_hh_l{layer}{suffix}")
    u = w_hh.shape[1]

    def rows(k: int) -> slice:
        return slice(k * u, (k + 1) * u)

    out: dict[str, np.ndarray] = {}
    if kind == "simple_rnn":
        out[prefix + "kernel"] = _np(w_ih.T)
        out[prefix + "recurrent_kernel"] = _np(w_hh.T)
        if b_ih is not None:
            out[prefix + "bias"] = _np(b_ih + b_hh)
    elif kind == "lstm":
        for g in s.LSTM_GATES:
            out[f"{prefix}kernel_{g}"] = _np(w_ih[rows(TORCH_LSTM_GATES.index(g))].T)
        for g in s.LSTM_GATES:
            out[f"{prefix}recurrent_kernel_{g}"] = _np(w_hh[rows(TORCH_LSTM_GATES.index(g))].T)
        if b_ih is not None:
            for g in s.LSTM_GATES:
                out[f"{prefix}bias_{g}"] = _np((b_ih + b_hh)[rows(TORCH_LSTM_GATES.index(g))])
    else:
        at = {g: rows(TORCH_GRU_GATES.index(CANONICAL_TO_TORCH_GRU[g])) for g in s.GRU_GATES}
        for g in s.GRU_GATES:
            out[f"{prefix}kernel_{g}"] = _np(w_ih[at[g]].T)
        for g in s.GRU_GATES:
            out[f"{prefix}recurrent_kernel_{g}"] = _np(w_hh[at[g]].T)
        if b_ih is not None:
            for g in s.GRU_GATES:
                out[f"{prefix}bias_{g}"] = _np(b_ih[at[g]])
            for g in s.GRU_GATES:
                out[f"{prefix}recurrent_bias_{g}"] = _np(b_hh[at[g]])
    return out


@dataclasses.dataclass
class Recurrence:
    """What an nn.RNN/LSTM/GRU (or its aten.lstm/gru/rnn_* op) computes, in torch's terms."""

    kind: str  # simple_rnn, lstm, gru
    tensors: dict  # torch's parameter names (flat_weight_names) -> tensors
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    dropout: float
    nonlinearity: str = "tanh"


def recurrent_layers(r: Reader, n: fx.Node, v: Value, rec: Recurrence) -> Value:
    """One spec layer per torch layer (bidirectional ones wrapped), a dropout layer between them for
    the module's `dropout`; nn.GRU is gru with reset_after true."""
    layout = BTF if rec.batch_first else TBF
    r.need(n, v, layouts=(layout,), what=f"batch_first={rec.batch_first} needs a sequence [{layout}]")
    units = rec.tensors["weight_hh_l0"].shape[1]
    for layer in range(rec.num_layers):
        if layer and rec.dropout:
            r.emit({"type": "dropout", "rate": float(rec.dropout)})
        doc: dict = {"type": rec.kind, "units": units, "use_bias": rec.bias, "return_sequences": True}
        if rec.kind == "simple_rnn":
            doc["activation"] = {"tanh": "tanh", "relu": "relu"}[rec.nonlinearity]
        if rec.kind == "gru":
            doc["reset_after"] = True
        if rec.bidirectional:
            weights = {**_rnn_weights(rec.tensors, rec.kind, layer, "", "forward."), **_rnn_weights(rec.tensors, rec.kind, layer, "_reverse", "backward.")}
            out = r.emit({"type": "bidirectional", "layer": doc}, weights, kind="rnn", layout=layout, bidirectional=True)
        else:
            out = r.emit(doc, _rnn_weights(rec.tensors, rec.kind, layer, "", ""), kind="rnn", layout=layout)
    return out


def recurrent_module(r: Reader, n: fx.Node, m) -> Value:
    """nn.RNN / nn.LSTM / nn.GRU, started from zeros."""
    if len(n.args) > 1 or n.kwargs:
        r.refuse(n, "is given an initial state; a spec recurrent layer starts from zeros")
    if getattr(m, "proj_size", 0):
        r.refuse(n, f"proj_size={m.proj_size} (a projected LSTM) has no spec equivalent")
    names = flat_weight_names(m.num_layers, m.bidirectional, m.bias)
    rec = Recurrence(RNN_KINDS[type(m)], {k: getattr(m, k) for k in names}, m.num_layers, m.bidirectional, m.batch_first, bool(m.bias), float(m.dropout), getattr(m, "nonlinearity", "tanh"))
    return recurrent_layers(r, n, r.value(n, n.args[0]), rec)


def getitem(r: Reader, n: fx.Node) -> Value:
    """out[0] of a recurrent module's tuple; x[:, -1] (batch-first) or x[-1] (time-first): the last step."""
    v = r.value(n, n.args[0])
    index = n.args[1]
    if v.kind == "rnn":
        if index == 0:
            return Value("seq", v.layout, v.made_by, v.bidirectional)
        r.refuse(n, f"takes item {index!r} of a recurrent module's (output, state) tuple; map the output, out[0], then its last step out[:, -1]")
    if v.kind == "tuple":
        if index == 0:
            return v.first
        r.refuse(n, f"takes item {index!r} of {r.label(n.args[0])}; only its output, item 0, maps")
    full = slice(None, None, None)
    if v.kind == "seq":
        idx = index if isinstance(index, tuple) else (index,)
        while idx and idx[-1] == full and len(idx) > (2 if v.layout == BTF else 1):
            idx = idx[:-1]
        if (v.layout == BTF and idx == (full, -1)) or (v.layout == TBF and idx == (-1,)):
            return last_step(r, n, v)
    if v.kind == "pooled":
        idx = index if isinstance(index, tuple) else (index,)
        if idx in ((full, full, 0), (Ellipsis, 0), (full, full, -1), (Ellipsis, -1)):
            return Value("vec")
    r.refuse(n, f"indexes with {index!r}; only out[0] of a recurrent module and the last step x[:, -1] map")


def last_step(r: Reader, n: fx.Node, v: Value) -> Value:
    """The last time step: return_sequences false on the recurrent layer that made the sequence; else
    cropping1d to the last step and flatten, which needs a fixed length."""
    made = v.made_by
    if made is not None and made == len(r.items) - 1 and not v.bidirectional and r.items[made].doc.get("return_sequences"):
        r.items[made].doc["return_sequences"] = False
        return Value("vec")
    t = r.length()
    if t is None:
        why = "the output of a bidirectional layer at its last step holds the backward pass after one step" if v.bidirectional else "it is the last step of a sequence no recurrent layer just made"
        r.refuse(n, f"takes the last step, which the spec expresses here only for a fixed length ({why}): give --input-shape TIME,FEATURES with TIME")
    if t > 1:
        r.emit({"type": "cropping1d", "cropping": [t - 1, 0]})
    r.emit({"type": "flatten"}, kind="vec")
    return Value("vec")


# --- feed-forward modules -----------------------------------------------------------------------


def linear(r: Reader, n: fx.Node, m: nn.Linear) -> Value:
    return dense(r, n, r.value(n, n.args[0]), m.weight, m.bias)


def dense(r: Reader, n: fx.Node, v: Value, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Value:
    """nn.Linear (weight [out, in]) -> dense (on a vector, or on every step of a sequence)."""
    r.need(n, v, kinds=("seq", "vec"), layouts=(BTF, TBF), what="nn.Linear acts on the last axis, which must be the features")
    weights = {"kernel": _np(weight.T)}
    if bias is not None:
        weights["bias"] = _np(bias)
    return r.emit({"type": "dense", "units": int(weight.shape[0]), "use_bias": bias is not None}, weights, kind=v.kind, layout=v.layout)


def _activation_value(r: Reader, n: fx.Node, act, softmax_dim=None) -> Value:
    v = r.value(n, n.args[0])
    if act == "softmax":
        feature_dims = {BTF: (2, -1), TBF: (2, -1), BFT: (1, -2)}[v.layout] if v.kind == "seq" else (1, -1)
        if softmax_dim not in feature_dims:
            r.refuse(n, f"softmax over dim={softmax_dim!r}, not the features; the spec's softmax normalises the features")
    if v.kind not in ("seq", "vec"):
        r.need(n, v, kinds=("seq", "vec"), layouts=(BTF, TBF, BFT))
    prev = r.items[-1] if r.items and v.made_by == len(r.items) - 1 else None
    if prev is not None and prev.doc["type"] in ("dense", "conv1d") and prev.doc.get("activation", "linear") == "linear" and len(_users(n.args[0])) == 1:
        prev.doc["activation"] = act  # nn.Linear then nn.ReLU is one dense with relu: the same function
        return Value(v.kind, v.layout, v.made_by)
    return r.emit({"type": "activation", "activation": act}, kind=v.kind, layout=v.layout)


def _users(node: fx.Node) -> list:
    return list(node.users)


def _module_activation(name: str, check: Callable = lambda m: None) -> Callable:
    def handler(r: Reader, n: fx.Node, m) -> Value:
        why = check(m)
        if why:
            r.refuse(n, why)
        act = name(m) if callable(name) else name
        return _activation_value(r, n, act, getattr(m, "dim", None))

    return handler


def _leaky(m_or_slope) -> dict:
    slope = m_or_slope if isinstance(m_or_slope, float) else m_or_slope.negative_slope
    return {"name": "leaky_relu", "negative_slope": float(slope)}


def _softplus_check(m) -> Optional[str]:
    return None if m.beta == 1 else f"beta={m.beta} has no spec equivalent (softplus with beta 1)"


def dropout_module(r: Reader, n: fx.Node, m) -> Value:
    v = r.value(n, n.args[0])
    if m.p >= 1:
        r.refuse(n, f"p={m.p}: a spec dropout rate is below 1")
    return r.emit({"type": "dropout", "rate": float(m.p)}, kind=v.kind, layout=v.layout)


def identity(r: Reader, n: fx.Node, m=None) -> Value:
    v = r.value(n, n.args[0])
    return dataclasses.replace(v)


def batch_norm1d(r: Reader, n: fx.Node, m: nn.BatchNorm1d) -> Value:
    if not m.track_running_stats or m.running_mean is None:
        r.refuse(n, "track_running_stats=False normalises with each batch's statistics in inference; a spec batch_norm uses its moving statistics")
    if m.momentum is None:
        r.refuse(n, "momentum=None (a cumulative average) has no spec equivalent")
    return batch_norm(r, n, r.value(n, n.args[0]), m.weight, m.bias, m.running_mean, m.running_var, float(m.momentum), float(m.eps))


def batch_norm(r: Reader, n: fx.Node, v: Value, weight, bias, mean: torch.Tensor, var: torch.Tensor, momentum: float, eps: float) -> Value:
    """nn.BatchNorm1d on [batch, channels, time] or [batch, features] -> batch_norm with Keras's
    momentum (1 - torch's) and its running statistics; no affine (weight None) as gamma 1, beta 0."""
    r.need(n, v, kinds=("seq", "vec"), layouts=(BFT,), what="nn.BatchNorm1d normalises dim 1, which must be the features")
    stats = _np(mean)
    weights = {
        "gamma": _np(weight) if weight is not None else np.ones_like(stats),
        "beta": _np(bias) if bias is not None else np.zeros_like(stats),
        "moving_mean": stats,
        "moving_variance": _np(var.to(mean.dtype)),
    }
    return r.emit({"type": "batch_norm", "momentum": 1.0 - momentum, "epsilon": eps}, weights, kind=v.kind, layout=v.layout)


def layer_norm_module(r: Reader, n: fx.Node, m: nn.LayerNorm) -> Value:
    return layer_norm(r, n, r.value(n, n.args[0]), tuple(m.normalized_shape), m.weight, m.bias, float(m.eps))


def layer_norm(r: Reader, n: fx.Node, v: Value, normalized_shape: tuple, weight, bias, eps: float) -> Value:
    """nn.LayerNorm(features) -> layer_norm; no weight or bias as gamma 1 / beta 0."""
    r.need(n, v, kinds=("seq", "vec"), layouts=(BTF, TBF), what="nn.LayerNorm normalises the last axis, which must be the features")
    if len(normalized_shape) != 1:
        r.refuse(n, f"normalized_shape={tuple(normalized_shape)} normalises more than the features")
    f = normalized_shape[0]
    like = weight if weight is not None else bias
    dtype = _np(like).dtype if like is not None else np.dtype(r.dtype)
    weights = {
        "gamma": _np(weight) if weight is not None else np.ones(f, dtype),
        "beta": _np(bias) if bias is not None else np.zeros(f, dtype),
    }
    return r.emit({"type": "layer_norm", "epsilon": eps}, weights, kind=v.kind, layout=v.layout)


def flatten_module(r: Reader, n: fx.Node, m: nn.Flatten) -> Value:
    if (m.start_dim, m.end_dim) != (1, -1):
        r.refuse(n, f"start_dim={m.start_dim}, end_dim={m.end_dim}; only flattening everything after the batch maps")
    return _flatten(r, n)


def _flatten(r: Reader, n: fx.Node) -> Value:
    v = r.value(n, n.args[0])
    if v.kind == "vec":
        return dataclasses.replace(v)
    if v.kind == "pooled":
        return Value("vec")
    r.need(n, v, layouts=(BTF,), what="flatten maps on [batch, time, features] (its order is time-major)")
    return r.emit({"type": "flatten"}, kind="vec")


# --- convolutions, pools, padding ----------------------------------------------------------------


def _int(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else int(value)


def conv1d_module(r: Reader, n: fx.Node, m: nn.Conv1d) -> Value:
    if m.padding_mode != "zeros":
        r.refuse(n, f"padding_mode={m.padding_mode!r} has no spec equivalent (zeros only)")
    return conv1d(r, n, r.value(n, n.args[0]), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def conv1d(r: Reader, n: fx.Node, v: Value, weight: torch.Tensor, bias, stride, padding, dilation, groups: int) -> Value:
    """nn.Conv1d (weight [filters, in / groups, kernel]) on [batch, channels, time] -> conv1d; a left
    zero pad of dilation*(kernel-1) just before it makes it causal; symmetric padding of
    dilation*(kernel-1)/2 is 'same'."""
    r.need(n, v, layouts=(BFT,), what="nn.Conv1d needs [batch, channels, time]: transpose x.transpose(1, 2) before it")
    k, stride, dilation = int(weight.shape[2]), _int(stride), _int(dilation)
    doc: dict = {"type": "conv1d", "filters": int(weight.shape[0]), "kernel_size": k, "strides": stride, "dilation_rate": dilation, "groups": int(groups), "use_bias": bias is not None}
    span = dilation * (k - 1)
    if isinstance(padding, str):
        doc["padding"] = padding
    else:
        p = _int(padding)
        prev = r.items[-1] if r.items and v.made_by == len(r.items) - 1 else None
        if p == 0 and prev is not None and prev.doc["type"] == "zero_padding1d" and prev.doc["padding"] == [span, 0] and stride == 1 and span:
            r.items.pop()
            doc["padding"] = "causal"
        elif p and stride == 1 and 2 * p == span:
            doc["padding"] = "same"
        else:
            if p:
                r.emit({"type": "zero_padding1d", "padding": p})
            doc["padding"] = "valid"
    weights = {"kernel": _np(weight.permute(2, 1, 0))}
    if bias is not None:
        weights["bias"] = _np(bias)
    return r.emit(doc, weights, layout=BFT)


def _pad(r: Reader, n: fx.Node, v: Value, pad, mode="constant", value=0.0) -> Value:
    if mode != "constant" or value not in (0, 0.0, None):
        r.refuse(n, f"pads with mode={mode!r}, value={value!r}; only zeros map (zero_padding1d)")
    pad = list(pad)
    if v.kind == "seq" and v.layout == BFT and len(pad) == 2:
        left, right = pad
    elif v.kind == "seq" and v.layout == BTF and len(pad) == 4 and pad[:2] == [0, 0]:
        left, right = pad[2:]
    else:
        r.refuse(n, f"pads {pad} of a {v.kind} [{v.layout}]; only padding of the time axis maps")
    if left < 0 or right < 0:
        r.refuse(n, f"negative padding {pad}: write the crop as x[:, a:b]... which does not map; use nn.Conv1d padding")
    return r.emit({"type": "zero_padding1d", "padding": [left, right]}, layout=v.layout)


def pad_function(r: Reader, n: fx.Node) -> Value:
    a = r.args(n, ("pad", "mode", "value"), {"mode": "constant", "value": None})
    return _pad(r, n, r.value(n, n.args[0]), a["pad"], a["mode"], a["value"])


def pad_module(r: Reader, n: fx.Node, m) -> Value:
    return _pad(r, n, r.value(n, n.args[0]), m.padding, "constant", getattr(m, "value", 0.0))


def _pool_doc(r: Reader, n: fx.Node, kind: str, k, stride, padding, dilation=1, ceil_mode=False, count_include_pad=True) -> Value:
    v = r.value(n, n.args[0])
    r.need(n, v, layouts=(BFT,), what=f"{kind} maps on [batch, channels, time]")
    k = _int(k)
    stride = k if stride is None or stride == [] else _int(stride)
    if _int(padding) or _int(dilation) != 1 or ceil_mode:
        r.refuse(n, "padding, dilation or ceil_mode of a pool has no spec equivalent")
    doc = {"type": kind, "pool_size": k}
    if stride != k:
        doc["strides"] = stride
    return r.emit(doc, layout=BFT)


def max_pool_module(r: Reader, n: fx.Node, m) -> Value:
    if m.return_indices:
        r.refuse(n, "return_indices=True has no spec equivalent")
    return _pool_doc(r, n, "max_pool1d", m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


def avg_pool_module(r: Reader, n: fx.Node, m) -> Value:
    return _pool_doc(r, n, "avg_pool1d", m.kernel_size, m.stride, m.padding, 1, m.ceil_mode)


def max_pool_function(r: Reader, n: fx.Node) -> Value:
    a = r.args(n, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"), {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
    if a["return_indices"]:
        r.refuse(n, "return_indices=True has no spec equivalent")
    return _pool_doc(r, n, "max_pool1d", a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])


def avg_pool_function(r: Reader, n: fx.Node) -> Value:
    a = r.args(n, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"), {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True})
    return _pool_doc(r, n, "avg_pool1d", a["kernel_size"], a["stride"], a["padding"], 1, a["ceil_mode"])


def adaptive_pool(kind: str) -> Callable:
    def handler(r: Reader, n: fx.Node, m) -> Value:
        if getattr(m, "return_indices", False):
            r.refuse(n, "return_indices=True has no spec equivalent")
        return global_pool(r, n, r.value(n, n.args[0]), kind, m.output_size)

    return handler


def global_pool(r: Reader, n: fx.Node, v: Value, kind: str, output_size) -> Value:
    """nn.AdaptiveAvgPool1d(1) / nn.AdaptiveMaxPool1d(1): a global pool, [batch, channels, 1]."""
    r.need(n, v, layouts=(BFT,), what=f"{kind} maps on [batch, channels, time]")
    if _int(output_size) != 1:
        r.refuse(n, f"output_size={output_size}; only output_size 1 (a global pool) maps")
    return r.emit({"type": kind}, kind="pooled")


def upsample_module(r: Reader, n: fx.Node, m: nn.Upsample) -> Value:
    return upsample(r, n, r.value(n, n.args[0]), m.mode, m.size, m.scale_factor)


def upsample(r: Reader, n: fx.Node, v: Value, mode: str, size, factor) -> Value:
    r.need(n, v, layouts=(BFT,), what="nn.Upsample maps on [batch, channels, time]")
    factor = factor[0] if isinstance(factor, (tuple, list)) and len(factor) == 1 else factor
    if mode != "nearest" or size is not None or not isinstance(factor, (int, float)) or float(factor) % 1 or factor < 1:
        r.refuse(n, f"mode={mode!r}, scale_factor={factor!r}; only nearest upsampling by a whole factor maps (upsampling1d)")
    return r.emit({"type": "upsampling1d", "size": int(factor)}, layout=BFT)


def embedding_module(r: Reader, n: fx.Node, m: nn.Embedding) -> Value:
    return embedding(r, n, r.value(n, n.args[0]), m.weight, m.padding_idx, m.max_norm, m.scale_grad_by_freq, m.sparse)


def embedding(r: Reader, n: fx.Node, v: Value, weight: torch.Tensor, padding_idx, max_norm, scale_grad_by_freq: bool, sparse: bool) -> Value:
    """nn.Embedding(num_embeddings, embedding_dim) on the model's token ids -> embedding with
    mask_zero false: padding_idx only keeps that row's gradient at zero in training (in the
    forward pass its row is looked up like any other), and torch has no mask that later layers
    follow, so the spec's mask would change what a recurrent layer after it computes."""
    if v.kind != "tokens" or r.items:
        r.refuse(n, "maps as the model's first layer only, on its token ids (input: {shape: [T], dtype: int64})")
    if max_norm is not None:
        r.refuse(n, f"max_norm={max_norm} renormalises the rows it looks up in the forward pass; the spec's embedding has no equivalent")
    if scale_grad_by_freq:
        r.refuse(n, "scale_grad_by_freq=True has no spec equivalent")
    if sparse:
        r.refuse(n, "sparse=True (sparse gradients) has no spec equivalent")
    if padding_idx is not None and padding_idx >= 0:
        r.notes.append(f"{r.label(n)}: padding_idx={padding_idx} dropped: it acts only in training (that row's gradient is kept at zero); mask_zero is false, as torch masks nothing")
    doc = {"type": "embedding", "input_dim": int(weight.shape[0]), "output_dim": int(weight.shape[1])}
    return r.emit(doc, {"embeddings": _np(weight)})


# --- functions and methods -----------------------------------------------------------------------


def _dims(r: Reader, n: fx.Node, dims) -> tuple:
    return tuple(d % 3 for d in dims)


def transpose(r: Reader, n: fx.Node) -> Value:
    """x.transpose(1, 2) between [batch, time, features] and [batch, features, time]; x.transpose(0, 1) to and from time-first."""
    v = r.value(n, n.args[0])
    dims = list(n.args[1:]) + [n.kwargs[k] for k in ("dim0", "dim1") if k in n.kwargs]
    if v.kind != "seq" or len(dims) != 2:
        r.refuse(n, f"transposes a {v.kind}; only sequences' axes map")
    return transpose_pair(r, n, v, tuple(sorted(_dims(r, n, dims))))


def permute(r: Reader, n: fx.Node) -> Value:
    v = r.value(n, n.args[0])
    dims = n.args[1:] if len(n.args) > 2 else (n.args[1] if len(n.args) > 1 else n.kwargs.get("dims"))
    dims = _dims(r, n, dims)
    if v.kind == "seq" and dims in ((0, 2, 1), (1, 0, 2)):
        return transpose_pair(r, n, v, (1, 2) if dims == (0, 2, 1) else (0, 1))
    r.refuse(n, f"permutes with {dims}; only swapping time and features, or batch and time, maps")


def transpose_pair(r: Reader, n: fx.Node, v: Value, pair) -> Value:
    swaps = {(BTF, (1, 2)): BFT, (BFT, (1, 2)): BTF, (BTF, (0, 1)): TBF, (TBF, (0, 1)): BTF}
    if (v.layout, pair) not in swaps:
        r.refuse(n, f"swaps dims {pair} of a sequence [{v.layout}]; a spec sequence is [batch, time, features]")
    return Value("seq", swaps[(v.layout, pair)], v.made_by, v.bidirectional)


def flatten_function(r: Reader, n: fx.Node) -> Value:
    a = r.args(n, ("start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
    if (a["start_dim"], a["end_dim"]) != (1, -1):
        r.refuse(n, f"start_dim={a['start_dim']}, end_dim={a['end_dim']}; only flatten(x, 1) maps")
    return _flatten(r, n)


def _reduce(kind: str) -> Callable:
    """x.mean(dim=time) / torch.amax(x, dim=time) -> the global pool over time."""

    def handler(r: Reader, n: fx.Node) -> Value:
        v = r.value(n, n.args[0])
        a = r.args(n, ("dim", "keepdim"), {"keepdim": False})
        dim = a.get("dim")
        dim = dim[0] if isinstance(dim, (tuple, list)) and len(dim) == 1 else dim
        time_dim = {BTF: 1, TBF: 0, BFT: 2}.get(v.layout) if v.kind == "seq" else None
        if time_dim is None or not isinstance(dim, int) or dim % 3 != time_dim or a["keepdim"]:
            r.refuse(n, f"reduces dim={dim!r}; only a reduction over the time axis (a global pool) maps")
        return r.emit({"type": kind}, kind="vec")

    return handler


def _function_activation(act: Any, names: tuple = (), defaults: Optional[dict] = None, check: Callable = lambda a: None) -> Callable:
    def handler(r: Reader, n: fx.Node) -> Value:
        a = r.args(n, names + ("inplace",), {**(defaults or {}), "inplace": False})
        why = check(a)
        if why:
            r.refuse(n, why)
        return _activation_value(r, n, act(a) if callable(act) else act, a.get("dim"))

    return handler


def dropout_function(r: Reader, n: fx.Node) -> Value:
    a = r.args(n, ("p", "training", "inplace"), {"p": 0.5, "training": True, "inplace": False})
    v = r.value(n, n.args[0])
    if a["training"] is not True and not isinstance(a["training"], fx.Node):
        return dataclasses.replace(v)
    r.refuse(n, "F.dropout in a module's forward is active whenever training=True is passed; use nn.Dropout, which follows eval()")


def _dim(n: fx.Node):
    """The `dim` of x.unsqueeze(dim) / x.squeeze(dim), positional or keyword."""
    return n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")


def unsqueeze(r: Reader, n: fx.Node) -> Value:
    v, dim = r.value(n, n.args[0]), _dim(n)
    if v.kind == "vec" and dim in (1, -2):
        return Value("unsqueezed")
    r.refuse(n, f"unsqueezes dim {dim!r} of a {v.kind}; only x.unsqueeze(1).repeat(1, n, 1) on a vector (repeat_vector) maps")


def repeat(r: Reader, n: fx.Node) -> Value:
    v = r.value(n, n.args[0])
    sizes = tuple(n.args[1:]) if len(n.args) > 2 else tuple(n.args[1]) if len(n.args) > 1 else ()
    if v.kind == "unsqueezed" and len(sizes) == 3 and isinstance(sizes[1], int) and sizes[1] >= 1:
        ok = sizes[0] in (1, -1) and sizes[2] in (1, -1) if n.target in ("expand", torch.ops.aten.expand.default) else sizes[0] == 1 and sizes[2] == 1
        if ok:
            return r.emit({"type": "repeat_vector", "n": sizes[1]})
    name = "expand" if n.target in ("expand", torch.ops.aten.expand.default) else "repeat"
    r.refuse(n, f"{name}{sizes}; only x.unsqueeze(1).{name}(1, n, 1) on a vector (repeat_vector) maps")


def squeeze(r: Reader, n: fx.Node) -> Value:
    v, dim = r.value(n, n.args[0]), _dim(n)
    if v.kind == "pooled" and dim in (2, -1):
        return Value("vec")
    r.refuse(n, f"squeezes dim {dim!r} of a {v.kind}; only the length-1 axis of a global pool maps")


def contiguous(r: Reader, n: fx.Node) -> Value:
    return dataclasses.replace(r.value(n, n.args[0]))


MODULES: dict[type, Callable] = {
    nn.RNN: recurrent_module,
    nn.LSTM: recurrent_module,
    nn.GRU: recurrent_module,
    nn.Linear: linear,
    nn.Embedding: embedding_module,
    nn.Dropout: dropout_module,
    nn.Identity: identity,
    nn.BatchNorm1d: batch_norm1d,
    nn.LayerNorm: layer_norm_module,
    nn.Flatten: flatten_module,
    nn.Conv1d: conv1d_module,
    nn.ConstantPad1d: pad_module,
    nn.ZeroPad1d: pad_module,
    nn.MaxPool1d: max_pool_module,
    nn.AvgPool1d: avg_pool_module,
    nn.AdaptiveAvgPool1d: adaptive_pool("global_avg_pool1d"),
    nn.AdaptiveMaxPool1d: adaptive_pool("global_max_pool1d"),
    nn.Upsample: upsample_module,
    nn.ReLU: _module_activation("relu"),
    nn.Tanh: _module_activation("tanh"),
    nn.Sigmoid: _module_activation("sigmoid"),
    nn.SELU: _module_activation("selu"),
    nn.SiLU: _module_activation("silu"),
    nn.Hardsigmoid: _module_activation("hard_sigmoid"),
    nn.ELU: _module_activation("elu", lambda m: None if m.alpha == 1.0 else f"alpha={m.alpha} has no spec equivalent (elu with alpha 1)"),
    nn.GELU: _module_activation("gelu", lambda m: None if m.approximate == "none" else f"approximate={m.approximate!r} has no spec equivalent (the exact erf gelu)"),
    nn.Softplus: _module_activation("softplus", _softplus_check),
    nn.LeakyReLU: _module_activation(_leaky),
    nn.Softmax: _module_activation("softmax"),
}

_GELU_CHECK = lambda a: None if a.get("approximate", "none") == "none" else f"approximate={a['approximate']!r} has no spec equivalent"  # noqa: E731

FUNCTIONS: dict[Any, Callable] = {
    operator.getitem: getitem,
    torch.transpose: transpose,
    torch.permute: permute,
    torch.flatten: flatten_function,
    torch.mean: _reduce("global_avg_pool1d"),
    torch.amax: _reduce("global_max_pool1d"),
    F.pad: pad_function,
    F.max_pool1d: max_pool_function,
    F.avg_pool1d: avg_pool_function,
    F.dropout: dropout_function,
    torch.relu: _function_activation("relu"),
    F.relu: _function_activation("relu"),
    torch.tanh: _function_activation("tanh"),
    F.tanh: _function_activation("tanh"),
    torch.sigmoid: _function_activation("sigmoid"),
    F.sigmoid: _function_activation("sigmoid"),
    F.selu: _function_activation("selu"),
    torch.selu: _function_activation("selu"),
    F.silu: _function_activation("silu"),
    F.hardsigmoid: _function_activation("hard_sigmoid"),
    F.elu: _function_activation("elu", ("alpha",), {"alpha": 1.0}, lambda a: None if a["alpha"] == 1.0 else f"alpha={a['alpha']} has no spec equivalent"),
    F.gelu: _function_activation("gelu", ("approximate",), {"approximate": "none"}, _GELU_CHECK),
    F.softplus: _function_activation("softplus", ("beta", "threshold"), {"beta": 1.0, "threshold": 20.0}, lambda a: None if a["beta"] == 1 else f"beta={a['beta']} has no spec equivalent"),
    F.leaky_relu: _function_activation(lambda a: _leaky(float(a["negative_slope"])), ("negative_slope",), {"negative_slope": 0.01}),
    F.softmax: _function_activation("softmax", ("dim", "_stacklevel", "dtype"), {"dim": None, "_stacklevel": 3, "dtype": None}),
    torch.softmax: _function_activation("softmax", ("dim", "dtype"), {"dim": None, "dtype": None}),
}

METHODS: dict[str, Callable] = {
    "transpose": transpose,
    "permute": permute,
    "flatten": flatten_function,
    "mean": _reduce("global_avg_pool1d"),
    "amax": _reduce("global_max_pool1d"),
    "contiguous": contiguous,
    "unsqueeze": unsqueeze,
    "repeat": repeat,
    "expand": repeat,
    "squeeze": squeeze,
    "relu": _function_activation("relu"),
    "tanh": _function_activation("tanh"),
    "sigmoid": _function_activation("sigmoid"),
    "softmax": _function_activation("softmax", ("dim",), {"dim": None}),
}


# --- the module ----------------------------------------------------------------------------------


def _callable(source: str) -> nn.Module:
    """`package.module:callable` -> the nn.Module it returns, importable from the current folder or PYTHONPATH."""
    module_name, _, attr = source.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise s.ImportRefused(f"{source}: cannot import {module_name!r}: {e}") from None
    except Exception as e:  # the user's module raised while importing
        raise s.ImportRefused(f"{source}: importing {module_name!r} raised {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise s.ImportRefused(f"{source}: {module_name!r} has no {attr!r}")
    try:
        obj = fn() if not isinstance(fn, nn.Module) else fn
    except Exception as e:
        raise s.ImportRefused(f"{source}: calling {attr}() raised {type(e).__name__}: {e}") from None
    if not isinstance(obj, nn.Module):
        raise s.ImportRefused(f"{source}: {attr}() returned a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _trace(module: nn.Module) -> fx.GraphModule:
    try:
        gm = fx.symbolic_trace(module)
        # `out, (h, c) = self.lstm(x)` leaves getitems of the state that reach nothing: not the model's.
        gm.graph.eliminate_dead_code()
        return gm
    except Exception as e:  # data-dependent Python control flow, a loop over time steps ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise s.ImportRefused(f"{type(module).__name__}: torch.fx cannot trace its forward ({type(e).__name__}: {first[:200]}); a spec is a chain of the modules and functions in docs/import.md") from None


def _runner(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _np(module(torch.from_numpy(np.ascontiguousarray(x))))

    return run


def read_module(source, input_shape: Optional[list] = None) -> s.Imported:
    """An nn.Module (or `package.module:callable`) as a seqspec.Imported: spec layer documents,
    canonical weights, and the module (in eval mode) as functions of NumPy inputs in float32 and float64."""
    if isinstance(source, str) and source.endswith(".pt2"):
        from ._import_program import read_program

        return read_program(source, input_shape)
    module = _callable(source) if isinstance(source, str) else source
    if input_shape is None:
        raise s.ImportRefused(f"{type(module).__name__}: a PyTorch module needs its input shape: --input-shape TIME,FEATURES (TIME may be null), FEATURES, or TIME alone for token ids")
    params = [p for p in module.parameters()] + [b for b in module.buffers() if b.is_floating_point()]
    dtypes = {str(p.dtype).replace("torch.", "") for p in params} or {"float32"}
    if len(dtypes) != 1 or not dtypes <= {"float32", "float64"}:
        raise s.ImportRefused(f"{type(module).__name__}: its parameters are {', '.join(sorted(dtypes))}; a spec model is float32 or float64 throughout")
    dtype = dtypes.pop()
    module = copy.deepcopy(module).eval()
    gm = _trace(module)
    input_dtype = "int64" if _takes_tokens(gm) else None
    if input_dtype is None and None in input_shape[-1:]:
        raise s.ImportRefused(f"{type(module).__name__}: --input-shape {list(input_shape)}: the features must be known (a free length is TIME null, FEATURES)")
    reader = Reader(gm, list(input_shape), input_dtype, dtype)
    reader.run()
    docs = [item.doc for item in reader.items]
    if not docs:
        raise s.ImportRefused(f"{type(module).__name__}: computes nothing the spec can hold (no layers)")
    weights = reader.canonical_weights()
    run = {dtype: _runner(module)}
    exact = {}
    if dtype == "float32":
        wide = copy.deepcopy(module).double()
        run["float64"] = _runner(wide)
        # Read again from the float64 copy: its two biases summed in float64, as the copy adds them.
        again = Reader(_trace(wide), list(input_shape), input_dtype, "float64")
        again.run()
        exact["float64"] = again.canonical_weights()
    name = s.spec_name(type(module).__name__)
    return s.Imported(name=name, input_shape=list(input_shape), layers=docs, weights=weights, run=run, dtype=dtype, exact=exact, notes=reader.notes, input_dtype=input_dtype)


def _takes_tokens(gm: fx.GraphModule) -> bool:
    """Whether the module's input goes to an nn.Embedding first: token ids (torch's int64), [batch, time]."""
    first = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)
    return first is not None and any(u.op == "call_module" and type(gm.get_submodule(u.target)) is nn.Embedding for u in first.users)
