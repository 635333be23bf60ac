"""The spec's activations as ONNX nodes with Keras 3's exact mathematics, and as the recurrent ops' activation attributes."""

from __future__ import annotations

import math
from typing import Callable, Optional

import seqspec
from seqspec import activation_name, activation_slope

from ._graph import Graph

# Keras's SELU constants in full: ONNX's Selu attributes are float32, 3e-8 off in float64.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _linear(g: Graph, x: str, act, axis: int) -> str:
    return x


def _unary(op_type: str) -> Callable:
    return lambda g, x, act, axis: g.op(op_type, [x])


def _softmax(g: Graph, x: str, act, axis: int) -> str:
    return g.op("Softmax", [x], axis=axis)


def _elu(g: Graph, x: str, act, axis: int) -> str:
    return g.op("Elu", [x], alpha=1.0)  # Keras's alpha; 1.0 is exact in float32


def _selu(g: Graph, x: str, act, axis: int) -> str:
    # scale * (x if x > 0 else alpha * (exp(x) - 1)); exp of min(x, 0) never overflows.
    negative = g.op("Mul", [g.const(SELU_ALPHA), g.op("Sub", [g.op("Exp", [g.op("Min", [x, g.const(0.0)])]), g.const(1.0)])])
    return g.op("Mul", [g.const(SELU_SCALE), g.op("Where", [g.op("Greater", [x, g.const(0.0)]), x, negative])])


def _gelu(g: Graph, x: str, act, axis: int) -> str:
    # Keras 3's default, approximate=False: 0.5 x (1 + erf(x / sqrt(2))).
    erf = g.op("Erf", [g.op("Mul", [x, g.const(1.0 / math.sqrt(2.0))])])
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), g.op("Add", [erf, g.const(1.0)])])


def _softplus(g: Graph, x: str, act, axis: int) -> str:
    # relu(x) + log(1 + exp(-|x|)): exact everywhere and never overflows, as Keras's.
    tail = g.op("Log", [g.op("Add", [g.op("Exp", [g.op("Neg", [g.op("Abs", [x])])]), g.const(1.0)])])
    return g.op("Add", [g.op("Relu", [x]), tail])


def _silu(g: Graph, x: str, act, axis: int) -> str:
    return g.op("Mul", [x, g.op("Sigmoid", [x])])


def _hard_sigmoid(g: Graph, x: str, act, axis: int) -> str:
    # Keras 3's relu6(x + 3) / 6 (not ONNX HardSigmoid's default slope 0.2, Keras 2's).
    clipped = g.op("Clip", [g.op("Add", [x, g.const(3.0)]), g.const(0.0), g.const(6.0)])
    return g.op("Div", [clipped, g.const(6.0)])


def _leaky_relu(g: Graph, x: str, act, axis: int) -> str:
    # The slope as a tensor in the model's dtype: LeakyRelu's alpha attribute is float32.
    return g.op("Where", [g.op("Less", [x, g.const(0.0)]), g.op("Mul", [x, g.const(activation_slope(act))]), x])


# Each activation name to the function that writes its nodes: fn(graph, x, act, feature_axis) -> output.
ACTIVATIONS = seqspec.Table(
    "onnx",
    "activation",
    "ACTIVATIONS",
    __name__,
    {
        "linear": _linear,
        "relu": _unary("Relu"),
        "tanh": _unary("Tanh"),
        "sigmoid": _unary("Sigmoid"),
        "softmax": _softmax,
        "elu": _elu,
        "selu": _selu,
        "gelu": _gelu,
        "softplus": _softplus,
        "silu": _silu,
        "hard_sigmoid": _hard_sigmoid,
        "leaky_relu": _leaky_relu,
    },
)


def apply(g: Graph, act, x: str, axis: int = -1) -> str:
    """The nodes of a spec activation on `x`; softmax acts on the features, at `axis`."""
    return ACTIVATIONS.lookup(activation_name(act))(g, x, act, axis)


# The recurrent ops' own activations that equal a spec activation exactly: (ONNX name, alpha, beta).
# Their alpha and beta are float32 attributes, exact for float32 models only, and onnx's reference
# evaluator (the float64 runtime) ignores the LSTM and GRU ops' activations: float64 models get
# the defaults natively and every other activation through a Scan.
_RECURRENT_ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "elu": ("Elu", 1.0, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
}


def recurrent_activations(acts: list, dtype: str, defaults: list[str]) -> Optional[dict]:
    """The activation attributes of a native RNN/LSTM/GRU op for `acts` (per direction), or None
    when the op cannot compute them exactly and the layer must be a Scan.

    Only one (alpha, beta) pair may occur: runtimes disagree on whether the lists hold one value
    per activation or one per activation that takes one, and with every entry equal both agree.
    """
    names = [activation_name(a) for a in acts]
    if dtype == "float64":
        return {} if names == defaults else None
    if any(n not in _RECURRENT_ACTIVATIONS and n != "leaky_relu" for n in names):
        return None
    found = [("LeakyRelu", activation_slope(a), None) if n == "leaky_relu" else _RECURRENT_ACTIVATIONS[n] for n, a in zip(names, acts)]
    alphas = {a for _, a, _ in found if a is not None}
    betas = {b for _, _, b in found if b is not None}
    if len(alphas) > 1 or len(betas) > 1:
        return None
    attrs: dict = {"activations": [op for op, _, _ in found]}
    if alphas:
        attrs["activation_alpha"] = [alphas.pop()] * len(found)
    if betas:
        attrs["activation_beta"] = [betas.pop()] * len(found)
    return attrs
