"""The spec's activations as torch functions with Keras 3's exact mathematics."""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

import seqspec
from seqspec import activation_name, activation_slope


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # F.softplus returns x itself above threshold=20, an error of 2e-9 in float64; this form is
    # exact everywhere and never overflows.
    return F.relu(x) + torch.log1p(torch.exp(-x.abs()))


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    # Keras 3's relu6(x + 3) / 6, written out: F.hardsigmoid's float64 gradient is a float32 1/6.
    return F.relu6(x + 3.0) / 6.0


def _gelu(x: torch.Tensor) -> torch.Tensor:
    # Keras 3's gelu defaults to approximate=False: the erf form.
    return F.gelu(x, approximate="none")


def _fixed(fn: Callable) -> Callable:
    """The maker of an activation without parameters."""
    return lambda act, axis: fn


def _leaky_relu(act, axis: int) -> Callable:
    # Always pass the slope: torch's default (0.01) is not Keras's (0.2).
    return functools.partial(F.leaky_relu, negative_slope=activation_slope(act))


def _softmax(act, axis: int) -> Callable:
    # Over the features, wherever a layer keeps them: dim 1 on a channels-first convolution.
    return functools.partial(F.softmax, dim=axis)


# Each activation name to the maker of its torch function: maker(act, feature_axis) -> fn.
ACTIVATIONS = seqspec.Table(
    "torch",
    "activation",
    "ACTIVATIONS",
    __name__,
    {
        "linear": _fixed(_linear),
        "relu": _fixed(F.relu),
        "tanh": _fixed(torch.tanh),
        "sigmoid": _fixed(torch.sigmoid),
        "softmax": _softmax,
        "elu": _fixed(F.elu),  # alpha 1.0, as Keras
        "selu": _fixed(F.selu),
        "gelu": _fixed(_gelu),
        "softplus": _fixed(_softplus),
        "silu": _fixed(F.silu),
        "hard_sigmoid": _fixed(_hard_sigmoid),
        "leaky_relu": _leaky_relu,
    },
)


def activation_fn(act, axis: int = -1) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise function of a spec activation; softmax acts on the features, at `axis`."""
    return ACTIVATIONS.lookup(activation_name(act))(act, axis)
