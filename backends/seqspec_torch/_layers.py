"""Feed-forward, convolutional and pooling layers, and the model that chains the spec's layers."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import seqspec
from seqspec import Window, activation_name

from . import _distributed
from ._activations import activation_fn

# Where a layer wants its features on a sequence: channels_last [B, T, F] as Keras,
# channels_first [B, F, T] as torch's convolutions, or either (elementwise layers).
CHANNELS_LAST, CHANNELS_FIRST, ANY = "channels_last", "channels_first", "any"

# Keras's backend.epsilon(), which its masked batch moments add to the count of real steps.
KERAS_EPSILON = 1e-7


class Dense(nn.Module):
    """act(x W + b) on the last axis: [..., in] -> [..., units]; linear.weight is (units, in)."""

    takes = gives = CHANNELS_LAST

    def __init__(self, node, n_in: int):
        super().__init__()
        self.linear = nn.Linear(n_in, node.units, bias=node.use_bias)
        self.activation = activation_fn(node.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class Activation(nn.Module):
    """act(x), any shape; softmax acts on the features, so it wants them last."""

    def __init__(self, node):
        super().__init__()
        self.activation = activation_fn(node.activation)
        self.takes = CHANNELS_LAST if activation_name(node.activation) == "softmax" else ANY
        self.gives = self.takes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)


class Dropout(nn.Module):
    """Elementwise dropout in training (Keras's noise_shape None), identity in inference; any shape."""

    takes = gives = ANY

    def __init__(self, node):
        super().__init__()
        self.rate = node.rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        # F.dropout's mask takes x's memory layout: on a contiguous x it is one draw in row order,
        # which a data-parallel step can draw for the global batch and slice (seqspec_torch._distributed).
        x = x.contiguous()
        if _distributed.sharded_step():
            keep = 1.0 - self.rate
            return x * _distributed.bernoulli(tuple(x.shape), 0, keep, x).div_(keep)
        return F.dropout(x, self.rate, True)


class TimeDistributed(nn.Module):
    """A per-step layer on every step: [B, T, F] -> [B, T, F']; the inner layer acts on the last axis."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.takes, self.gives = layer.takes, layer.gives

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class Flatten(nn.Module):
    """[B, T, F] -> [B, T*F], step-major as Keras; a vector passes unchanged."""

    takes = gives = CHANNELS_LAST

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class RepeatVector(nn.Module):
    """[B, F] -> [B, n, F]."""

    takes = gives = CHANNELS_LAST

    def __init__(self, node):
        super().__init__()
        self.n = node.n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(-1, self.n, -1)


class BatchNorm(nn.Module):
    """Keras's BatchNormalization on the feature axis, [B, F], [B, T, F] or [B, F, T] (channel_axis 1).

    weight (gamma), bias (beta) trainable; running_mean, running_var non-trainable buffers.
    Written out rather than F.batch_norm because Keras updates the moving variance with the
    biased batch variance where torch uses the unbiased one.
    """

    def __init__(self, node, n_features: int, channel_axis: int):
        super().__init__()
        self.momentum, self.epsilon, self.channel_axis = node.momentum, node.epsilon, channel_axis
        self.takes = self.gives = CHANNELS_FIRST if channel_axis == 1 else CHANNELS_LAST
        self.weight = nn.Parameter(torch.ones(n_features))
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("running_mean", torch.zeros(n_features))
        self.register_buffer("running_var", torch.ones(n_features))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """mask None or [B, T] (channels-last [B, T, F] only): in training the moments skip masked
        steps, as Keras's `_moments` (the count of real steps plus KERAS_EPSILON)."""
        axis = self.channel_axis % x.dim()
        shape = [1] * x.dim()
        shape[axis] = -1
        if self.training:
            dims = [d for d in range(x.dim()) if d != axis]
            if mask is None:
                var, mean = _distributed.moments(x, dims, axis)  # over the global batch in data-parallel training
            else:
                m = mask.unsqueeze(-1).expand_as(x)
                count = m.to(x.dtype).sum(dims) + KERAS_EPSILON
                mean = torch.where(m, x, 0).sum(dims) / count
                var = torch.where(m, x - mean, 0).square().sum(dims) / count
            with torch.no_grad():
                m = self.momentum  # Keras: moving = moving * momentum + batch * (1 - momentum)
                self.running_mean.mul_(m).add_(mean.detach(), alpha=1 - m)
                self.running_var.mul_(m).add_(var.detach(), alpha=1 - m)
        else:
            mean, var = self.running_mean, self.running_var
        inv = torch.rsqrt(var + self.epsilon) * self.weight
        return x * inv.view(shape) + (self.bias - mean * inv).view(shape)


class LayerNorm(nn.Module):
    """Normalises the last axis: [..., F] -> [..., F]; weight (gamma), bias (beta) (F,)."""

    takes = gives = CHANNELS_LAST

    def __init__(self, node, n_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(n_features, eps=node.epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


# --- convolutions and pools: channels first, [B, C, T] -------------------------------------------


def _pad_time(x: torch.Tensor, window: Window, value: float = 0.0) -> torch.Tensor:
    """x [B, C, T] padded along T by TensorFlow's rule for this length (Window.pads)."""
    left, right = window.pads(x.shape[-1])
    if left == right == 0:
        return x
    return F.pad(x, (left, right), value=value)


class Conv1d(nn.Module):
    """act(conv(x)) with Keras's padding: [B, in, T] -> [B, filters, T'].

    conv.weight (filters, in / groups, kernel_size), conv.bias (filters,). torch's own padding='same'
    refuses strides > 1 and pads symmetrically; TensorFlow puts the odd pad on the right,
    and 'causal' pads on the left, so the pad is explicit and computed for each input length.
    """

    takes = gives = CHANNELS_FIRST

    def __init__(self, n_in: int, filters: int, kernel_size: int, strides=1, padding="valid", dilation_rate=1, activation="linear", use_bias=True, groups=1):
        super().__init__()
        self.window = Window(kernel_size, strides, dilation_rate, padding)
        self.conv = nn.Conv1d(n_in, filters, kernel_size, stride=strides, dilation=dilation_rate, bias=use_bias, groups=groups)
        self.activation = activation_fn(activation, axis=1)  # channels first: softmax over the filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(_pad_time(x, self.window)))


class _Pool1d(nn.Module):
    """A pooling window along time, channels-first: [B, C, T] -> [B, C, T']."""

    takes = gives = CHANNELS_FIRST

    def __init__(self, node):
        super().__init__()
        self.window = Window(node.pool_size, node.stride, 1, node.padding)


class MaxPool1d(_Pool1d):
    """[B, C, T] -> [B, C, T']; 'same' pads with -inf so padding never wins, as TensorFlow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.window
        return F.max_pool1d(_pad_time(x, w, float("-inf")), w.kernel, w.stride)


class AvgPool1d(_Pool1d):
    """[B, C, T] -> [B, C, T']; 'same' averages only the real steps of each window, as TensorFlow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.window
        padded = _pad_time(x, w)
        mean = F.avg_pool1d(padded, w.kernel, w.stride)
        if padded is x:
            return mean
        # The share of each window that is real input, so mean / share averages the real steps.
        share = F.avg_pool1d(_pad_time(x.new_ones(1, 1, x.shape[-1]), w), w.kernel, w.stride)
        return mean / share


class _AlongTime(nn.Module):
    """A layer that works on the time axis in whichever layout the sequence arrives (no transpose)."""

    def __init__(self, layout: str):
        super().__init__()
        self.takes = layout
        self.time_axis = 2 if layout == CHANNELS_FIRST else 1


class GlobalPool(_AlongTime):
    """Max or mean over time: [B, T, F] or [B, F, T] -> [B, F]."""

    gives = CHANNELS_LAST

    def __init__(self, reduce: str, layout: str):
        super().__init__(layout)
        self.reduce = reduce

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """mask None or [B, T]: the mean of the real steps only, as Keras (NaN for a row with none, as Keras)."""
        if self.reduce == "max":
            return x.amax(dim=self.time_axis)
        if mask is None:
            return x.mean(dim=self.time_axis)
        m = mask.unsqueeze(self.time_axis % 2 + 1)  # [B, T, 1] or [B, 1, T]
        return torch.where(m, x, 0).sum(self.time_axis) / m.to(x.dtype).sum(self.time_axis)


class TimePad(_AlongTime):
    """Zeros added at each end of the time axis, or, negative, steps dropped: [B, T, F] or [B, F, T]
    (the layout the sequence arrives in) -> T + left + right steps."""

    gives = ANY

    def __init__(self, pads: tuple[int, int], layout: str):
        super().__init__(layout)
        self.left, self.right = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left >= 0 and self.right >= 0:
            pad = (self.left, self.right) if self.time_axis == 2 else (0, 0, self.left, self.right)
            return F.pad(x, pad)
        t = x.shape[self.time_axis]
        return x.narrow(self.time_axis, -self.left, t + self.left + self.right)


class UpSampling1d(_AlongTime):
    """Every step repeated `size` times: [B, T, F] or [B, F, T] -> size * T steps."""

    gives = ANY

    def __init__(self, size: int, layout: str):
        super().__init__(layout)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.size, dim=self.time_axis)


class Masking(nn.Module):
    """keras.layers.Masking: [B, T, F] -> [B, T, F] with the masked steps set to 0; the mask [B, T]
    is True where some feature differs from `mask_value`."""

    takes = gives = CHANNELS_LAST

    def __init__(self, node):
        super().__init__()
        self.mask_value = node.mask_value

    def compute_mask(self, x: torch.Tensor) -> torch.Tensor:
        return (x != self.mask_value).any(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.compute_mask(x).unsqueeze(-1), x, 0)


class Embedding(nn.Module):
    """keras.layers.Embedding: token ids [B, T] (integers) -> [B, T, output_dim]; embedding.weight
    (input_dim, output_dim) is the canonical `embeddings` as it is. With mask_zero the mask is ids != 0."""

    takes = gives = CHANNELS_LAST

    def __init__(self, node):
        super().__init__()
        self.embedding = nn.Embedding(node.input_dim, node.output_dim)
        self.mask_zero = node.mask_zero

    def compute_mask(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return x != 0 if self.mask_zero else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class WaveNet(nn.Module):
    """A stack of causal dilated convolutions: [B, in, T] -> [B, filters, T].

    `convs` follows seqspec.WaveNet.convolutions: gated, the input convolution then a
    (dilated to 2*filters, 1x1 residual) pair per rate; simplified, one convolution per rate.
    """

    takes = gives = CHANNELS_FIRST

    def __init__(self, convs: list[Conv1d], gated: bool, filters: int):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.gated = gated
        self.filters = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            for conv in self.convs:
                x = conv(x)
            return x
        x = self.convs[0](x)
        skips = None
        for i in range(1, len(self.convs), 2):
            dilated, residual = self.convs[i], self.convs[i + 1]
            d = dilated(x)
            out = residual(torch.tanh(d[:, : self.filters]) * torch.sigmoid(d[:, self.filters :]))
            x = x + out
            skips = out if skips is None else skips + out
        return F.relu(skips)


class Model(nn.Module):
    """The spec's layers in order: forward takes [B, T, F] or [B, F] and returns Keras's output shape.

    One submodule per top-level spec layer in `layers`. Consecutive convolutions and pools stay
    channels-first: the model transposes only where the layout changes (`transpose_before`).
    """

    def __init__(self, spec, layers: list[nn.Module], transpose_before: list[bool], layouts_after: list[str]):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleList(layers)
        self.transpose_before = transpose_before
        self.layouts_after = layouts_after
        # What each layer does with a mask (seqspec's mask rules, the flow checked by seqspec.infer).
        self.mask_rules = [node.mask_rule for node in spec.layers]
        self.keeps_mask = [seqspec.infer(spec).masks.given[i] is not None for i in range(len(layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._channels_last(self._through(x), self.layouts_after[-1])

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output, channels-last."""
        outputs: list[torch.Tensor] = []
        self._through(x, outputs)
        return [self._channels_last(y, layout) for y, layout in zip(outputs, self.layouts_after)]

    def _through(self, x: torch.Tensor, outputs: Optional[list] = None) -> torch.Tensor:
        """The layers in order (each output appended to `outputs`, if given), the mask [B, T] handed
        on as Keras hands it (seqspec/_masks.py)."""
        mask = None
        for layer, flip, rule, keeps in zip(self.layers, self.transpose_before, self.mask_rules, self.keeps_mask):
            x = x.transpose(1, 2) if flip else x
            if rule == seqspec.MAKES:
                x, mask = layer(x), layer.compute_mask(x)
            elif mask is not None and rule in (seqspec.READS, seqspec.RECURRENT, seqspec.AVERAGES):
                x = layer(x, mask)
            else:
                x = layer(x)
            mask = mask if keeps else None
            if outputs is not None:
                outputs.append(x)
        return x

    @staticmethod
    def _channels_last(x: torch.Tensor, layout: str) -> torch.Tensor:
        return x.transpose(1, 2) if layout == CHANNELS_FIRST and x.dim() == 3 else x
