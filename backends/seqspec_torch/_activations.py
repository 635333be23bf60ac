"""The spec's activations as torch functions with Keras 3's exact mathematics."""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from seqspec import activation_name, activation_slope


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return F.softmax(x, dim=-1)


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


_BY_NAME: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": _linear,
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": _softmax,
    "elu": F.elu,  # alpha 1.0, as Keras
    "selu": F.selu,
    "gelu": _gelu,
    "softplus": _softplus,
    "silu": F.silu,
    "hard_sigmoid": _hard_sigmoid,
}


def activation_fn(act) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise function of a spec activation (softmax: over the last axis)."""
    name = activation_name(act)
    if name == "leaky_relu":
        # Always pass the slope: torch's default (0.01) is not Keras's (0.2).
        return functools.partial(F.leaky_relu, negative_slope=activation_slope(act))
    return _BY_NAME[name]
