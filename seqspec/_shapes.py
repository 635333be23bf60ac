"""Shape inference without a framework: output shapes, parameter counts and time mappings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from . import _spec as s

Shape = tuple  # (None, time|None, features) or (None, features); batch is always None


class ShapeError(ValueError):
    """A layer that cannot take the shape its predecessor gives it.

    `index` is the layer's position in `layers`, or None for a problem with the whole spec.
    """

    def __init__(self, index: Optional[int], message: str):
        super().__init__(message)
        self.index = index
        self.message = message


@dataclass(frozen=True)
class TimeMap:
    """How output step j of a layer (or a stack) relates to its input steps.

    Output step j sees input steps up to `stride * j + last`, and `receptive_field` steps in all
    (steps before 0 are padding); `receptive_field` is None when a recurrent layer lets every
    step see all earlier ones. `last` is None when it depends on the input length ('same'
    padding with a stride > 1 and an unknown length).
    """

    stride: int = 1
    last: Optional[int] = 0
    receptive_field: Optional[int] = 1

    def then(self, later: "TimeMap") -> "TimeMap":
        """The map of this layer followed by `later`."""
        last = None
        if self.last is not None and later.last is not None:
            last = self.stride * later.last + self.last
        rf = None
        if self.receptive_field is not None and later.receptive_field is not None:
            rf = self.stride * (later.receptive_field - 1) + self.receptive_field
        return TimeMap(self.stride * later.stride, last, rf)

    @property
    def first(self) -> Optional[int]:
        """The first input step that output step 0 sees (negative: padding)."""
        if self.last is None or self.receptive_field is None:
            return None
        return self.last - self.receptive_field + 1

    def last_input_step(self, j: int) -> Optional[int]:
        """The last input step that output step j sees: the step its forecast is aligned to."""
        return None if self.last is None else self.stride * j + self.last


@dataclass(frozen=True)
class Window:
    """One sliding-window op along time: a convolution or a pooling."""

    kernel: int
    stride: int
    dilation: int
    padding: str  # valid, same or causal

    @property
    def span(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def length(self, t: int) -> int:
        """Output length for input length t (Keras/TensorFlow rules)."""
        if self.padding == "valid":
            return (t - self.span) // self.stride + 1 if t >= self.span else 0
        if self.padding == "same":
            return -(-t // self.stride)
        return (t - 1) // self.stride + 1  # causal: left pad (span - 1)

    def pads(self, t: int) -> tuple[int, int]:
        """(left, right) padding for input length t; 'same' puts the odd extra pad on the right."""
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "causal":
            return (self.span - 1, 0)
        total = max((self.length(t) - 1) * self.stride + self.span - t, 0)
        return (total // 2, total - total // 2)

    def length_formula(self) -> str:
        if self.padding == "valid":
            if self.stride == 1:
                return f"T - {self.span - 1}" if self.span > 1 else "T"
            return f"floor((T - {self.span}) / {self.stride}) + 1"
        if self.stride == 1:
            return "T"
        return f"ceil(T / {self.stride})" if self.padding == "same" else f"floor((T - 1) / {self.stride}) + 1"

    def time_map(self, t: Optional[int]) -> TimeMap:
        if self.padding == "valid":
            left: Optional[int] = 0
        elif self.padding == "causal" or self.stride == 1:
            left = self.pads(self.span)[0]
        else:
            left = None if t is None else self.pads(t)[0]
        return TimeMap(self.stride, None if left is None else self.span - 1 - left, self.span)


@dataclass(frozen=True)
class LayerInfo:
    """What the core knows of one layer without building it."""

    index: int
    type: str
    input_shape: Shape
    output_shape: Shape
    trainable_params: int
    non_trainable_params: int
    windows: tuple[Window, ...] = ()  # the sliding windows along time, in order
    time_map: Optional[TimeMap] = None  # None: the layer removes or replaces the time axis

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params


@dataclass(frozen=True)
class ModelInfo:
    """Shapes, parameter counts and the time mapping of a whole spec."""

    input_shape: Shape
    layers: tuple[LayerInfo, ...]
    time_map: Optional[TimeMap]
    window_chain: tuple[Window, ...] = field(default=())

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].output_shape

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return sum(layer.non_trainable_params for layer in self.layers)

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def output_length(self, t: int) -> Optional[int]:
        """Output time length for input length t (None when the output has no time axis)."""
        if self.time_map is None:
            return None
        for window in self.window_chain:
            t = window.length(t)
        return t

    def length_formula(self) -> Optional[str]:
        if self.time_map is None:
            return None
        formula = "T"
        for window in self.window_chain:
            f = window.length_formula()
            formula = f if formula == "T" else f.replace("T", f"({formula})")
        return formula


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join("batch" if i == 0 else ("null" if d is None else str(d)) for i, d in enumerate(shape)) + "]"


def recurrent_cell_params(cell, in_features: int) -> int:
    """Keras's parameter count of one recurrent cell (or layer) on `in_features` inputs."""
    u = cell.units
    bias = 1 if cell.use_bias else 0
    if cell.type in ("simple_rnn", "ln_simple_rnn"):
        n = u * (in_features + u) + bias * u
        return n + (2 * u if cell.type == "ln_simple_rnn" else 0)
    if cell.type in ("lstm", "peephole_lstm"):
        n = 4 * u * (in_features + u) + bias * 4 * u
        return n + (3 * u if cell.type == "peephole_lstm" else 0)
    if cell.type == "gru":
        return 3 * u * (in_features + u) + bias * 3 * u * (2 if cell.reset_after else 1)
    raise AssertionError(f"no parameter rule for cell type {cell.type!r}")


def _need_sequence(index: int, layer, shape: Shape, what: str) -> None:
    if len(shape) != 3:
        raise ShapeError(index, f"{layer.type} needs a sequence [batch, time, features] {what}, got {_fmt(shape)}")


def _conv_output(index: int, layer, shape: Shape, window: Window) -> int | None:
    t = shape[1]
    if t is None:
        return None
    out = window.length(t)
    if out < 1:
        raise ShapeError(
            index,
            f"{layer.type} with a window of {window.span} steps (kernel {window.kernel}, dilation "
            f"{window.dilation}) is longer than its input {_fmt(shape)} with padding 'valid'",
        )
    return out


def _recurrent(index, layer, shape):
    _need_sequence(index, layer, shape, "as input")
    core = layer.cell if layer.type == "rnn" else layer
    params = recurrent_cell_params(core, shape[2])
    out = (None, shape[1], core.units) if layer.return_sequences else (None, core.units)
    return out, params, 0, (), (TimeMap(1, 0, None) if layer.return_sequences else None)


def _bidirectional(index, layer, shape):
    inner_shape, params, _, _, tmap = _recurrent(index, layer.layer, shape)
    units = inner_shape[-1] * (2 if layer.merge_mode == "concat" else 1)
    return inner_shape[:-1] + (units,), 2 * params, 0, (), tmap


def _dense(index, layer, shape):
    params = shape[-1] * layer.units + (layer.units if layer.use_bias else 0)
    tmap = TimeMap() if len(shape) == 3 else None
    return shape[:-1] + (layer.units,), params, 0, (), tmap


def _time_distributed(index, layer, shape):
    _need_sequence(index, layer, shape, "to distribute over")
    out, params, nt, _, _ = _RULES[layer.layer.type](index, layer.layer, shape)
    return out, params, nt, (), TimeMap()


def _identity(index, layer, shape):
    return shape, 0, 0, (), (TimeMap() if len(shape) == 3 else None)


def _flatten(index, layer, shape):
    if len(shape) == 2:
        return shape, 0, 0, (), None
    if shape[1] is None:
        raise ShapeError(index, f"flatten needs a fixed time length, got {_fmt(shape)}; set input.shape's time steps")
    return (None, shape[1] * shape[2]), 0, 0, (), None


def _repeat_vector(index, layer, shape):
    if len(shape) != 2:
        raise ShapeError(index, f"repeat_vector needs a vector [batch, features], got the sequence {_fmt(shape)}")
    return (None, layer.n, shape[1]), 0, 0, (), None


def _batch_norm(index, layer, shape):
    f = shape[-1]
    return shape, 2 * f, 2 * f, (), (TimeMap() if len(shape) == 3 else None)


def _layer_norm(index, layer, shape):
    return shape, 2 * shape[-1], 0, (), (TimeMap() if len(shape) == 3 else None)


def _conv1d(index, layer, shape):
    _need_sequence(index, layer, shape, "as input")
    window = Window(layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding)
    t = _conv_output(index, layer, shape, window)
    params = layer.kernel_size * shape[2] * layer.filters + (layer.filters if layer.use_bias else 0)
    return (None, t, layer.filters), params, 0, (window,), window.time_map(shape[1])


def _pool(index, layer, shape):
    _need_sequence(index, layer, shape, "as input")
    window = Window(layer.pool_size, layer.stride, 1, layer.padding)
    t = _conv_output(index, layer, shape, window)
    return (None, t, shape[2]), 0, 0, (window,), window.time_map(shape[1])


def _global_pool(index, layer, shape):
    _need_sequence(index, layer, shape, "as input")
    return (None, shape[2]), 0, 0, (), None


def _wavenet(index, layer, shape):
    _need_sequence(index, layer, shape, "as input")
    k, f, c = layer.kernel_size, layer.filters, shape[2]
    windows = [Window(k, 1, rate, "causal") for rate in layer.rates]
    if layer.gated:
        windows.insert(0, Window(k, 1, 1, "causal"))
        params = k * c * f + f  # input convolution
        params += len(layer.rates) * ((k * f * 2 * f + 2 * f) + (f * f + f))  # dilated + 1x1
    else:
        params = 0
        for _ in layer.rates:
            params += k * c * f + f
            c = f
    tmap = TimeMap()
    for window in windows:
        tmap = tmap.then(window.time_map(shape[1]))
    return (None, shape[1], f), params, 0, tuple(windows), tmap


_RULES: dict[str, Callable] = {
    "simple_rnn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "rnn": _recurrent,
    "bidirectional": _bidirectional,
    "dense": _dense,
    "time_distributed": _time_distributed,
    "flatten": _flatten,
    "repeat_vector": _repeat_vector,
    "dropout": _identity,
    "activation": _identity,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "conv1d": _conv1d,
    "max_pool1d": _pool,
    "avg_pool1d": _pool,
    "global_max_pool1d": _global_pool,
    "global_avg_pool1d": _global_pool,
    "wavenet": _wavenet,
}


def infer(spec: s.Spec) -> ModelInfo:
    """Every layer's input and output shape, parameter counts and time mapping.

    Raises ShapeError naming the first layer whose input shape it cannot take.
    """
    shape: Shape = (None, *spec.input.shape)
    if shape[-1] is None:
        raise ShapeError(None, "the number of features must be fixed, got null")
    infos = []
    tmap: Optional[TimeMap] = TimeMap() if len(shape) == 3 else None
    chain: list[Window] = []
    for index, layer in enumerate(spec.layers):
        out, trainable, non_trainable, windows, layer_map = _RULES[layer.type](index, layer, shape)
        infos.append(LayerInfo(index, layer.type, shape, out, trainable, non_trainable, windows, layer_map))
        # A layer that drops the time axis ends the alignment for good: a time axis that
        # repeat_vector makes later has no relation to the input's steps.
        if layer_map is None:
            tmap, chain = None, []
        elif tmap is not None:
            tmap = tmap.then(layer_map)
            chain.extend(windows)
        shape = out
    return ModelInfo((None, *spec.input.shape), tuple(infos), tmap, tuple(chain))


def format_shape(shape: Shape) -> str:
    """`[batch, 50, 20]`, with `null` for an unknown length."""
    return _fmt(shape)

