"""The spec language, version 1, as frozen Pydantic models: one class per layer and cell type."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, ClassVar, Iterator, Literal, NamedTuple, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr, model_validator, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from ._errors import describe, field_path
from ._masks import AVERAGES, MAKES, PASSES, READS, RECURRENT, REFUSES
from ._rules import GLOROT, ONES, ORTHOGONAL, UNIFORM, ZEROS, Array, Shape, ShapeError, TimeMap, TimeOp, Upsampling, Window, format_shape, need_sequence

FORMAT_VERSION = 1

ACTIVATIONS = (
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "softmax",
    "elu",
    "selu",
    "gelu",
    "softplus",
    "silu",
    "hard_sigmoid",
    "leaky_relu",
)

ActivationName = Literal[
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "softmax",
    "elu",
    "selu",
    "gelu",
    "softplus",
    "silu",
    "hard_sigmoid",
    "leaky_relu",
]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class LeakyReLU(_Node):
    """`{name: leaky_relu, negative_slope: 0.2}`; a bare `leaky_relu` means slope 0.2 (Keras's default)."""

    name: Literal["leaky_relu"]
    negative_slope: float = Field(0.2, ge=0.0)


def _activation(value: Any) -> Union[str, LeakyReLU]:
    """One clean error for a bad activation, instead of one per branch of the union."""
    if isinstance(value, LeakyReLU):
        return value
    if isinstance(value, str) and not isinstance(value, bool):
        if value in ACTIVATIONS:
            return value
        close = difflib.get_close_matches(value.lower(), ACTIVATIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(ACTIVATIONS)})"
        raise PydanticCustomError("unknown_activation", "{msg}", {"msg": f"unknown activation {value!r}{hint}"})
    if isinstance(value, dict):
        try:
            return LeakyReLU.model_validate(value)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(where, ["name", "negative_slope"], n=1)
                msg = f"unknown key {where!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            elif err["type"] == "missing":
                msg = f"missing required key {where!r}"
            else:
                msg = f"{where}: {err['msg'][0].lower()}{err['msg'][1:]}"
            raise PydanticCustomError(
                "activation", "{msg}", {"msg": msg + "; a parameterised activation is written {name: leaky_relu, negative_slope: 0.2}"}
            ) from None
    raise PydanticCustomError(
        "activation_type", "{msg}", {"msg": f"must be an activation name or {{name: leaky_relu, negative_slope: ...}}, got {value!r}"}
    )


_ACTIVATION_SCHEMA = {
    "anyOf": [
        {"enum": list(ACTIVATIONS)},
        {
            "type": "object",
            "properties": {
                "name": {"const": "leaky_relu"},
                "negative_slope": {"type": "number", "minimum": 0, "default": 0.2},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    ],
    "description": "An activation name, or {name: leaky_relu, negative_slope: 0.2}.",
}

Activation = Annotated[
    Union[ActivationName, LeakyReLU],
    PlainValidator(_activation),
    PlainSerializer(lambda v: v if isinstance(v, str) else v.model_dump(), return_type=Any),
    WithJsonSchema(_ACTIVATION_SCHEMA),
]

Units = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


# --- the rules every node type states --------------------------------------------------------


class _Layer(_Node):
    """A layer type: its keys are the fields; its methods are the core's rules for it.

    `output_shape` is required of every layer type; a layer with canonical arrays defines
    `arrays`, one that moves steps along time `time_ops` (or `time_map`). Shape inference,
    parameter counts (the arrays' sizes), the weight layout and the targets' alignment all come
    from these (docs/adding-a-layer.md).

    `mask_rule` says what it does with a mask that reaches it, as its Keras layer does
    (seqspec/_masks.py): by default it refuses one, with a located error.
    """

    mask_rule: ClassVar[str] = REFUSES

    def output_shape(self, index: int, shape: Shape) -> Shape:
        """The output shape for an input of `shape`; ShapeError (naming `index`) if it cannot take it."""
        raise ShapeError(
            index,
            f"layer type {self.type!r} has no shape rule: define {type(self).__name__}.output_shape in seqspec/_spec.py",
        )

    @property
    def trains_differently(self) -> bool:
        """Whether training mode computes another function than inference (dropout, batch
        statistics); `check` runs training mode only where some layer does."""
        return False

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """Its canonical arrays, named `prefix + name`, on an input of `shape` (none by default)."""
        return iter(())

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        """Its ops along time (windows, pads, upsampling), in order (none by default)."""
        return ()

    def time_map(self, shape: Shape, out: Shape) -> Optional[TimeMap]:
        """How its output steps relate to its input steps; None when it removes or replaces the time axis."""
        if len(shape) != 3 or len(out) != 3:
            return None
        tmap = TimeMap()
        for op in self.time_ops(shape):
            tmap = tmap.then(op.time_map(shape[1]))
        return tmap


def _per_step(shape: Shape, features: int) -> Shape:
    return shape[:-1] + (features,)


def _window_output(index: int, node, shape: Shape, window: Window) -> Optional[int]:
    """The output length of a window over the input's time axis (None when that is unknown)."""
    t = shape[1]
    if t is None:
        return None
    out = window.length(t)
    if out < 1:
        if window.kernel == 1:  # cropping
            raise ShapeError(index, f"{node.type} removes {-sum(window.pads(t))} steps and its input {format_shape(shape)} has {t}: no step is left")
        raise ShapeError(
            index,
            f"{node.type} with a window of {window.span} steps (kernel {window.kernel}, dilation "
            f"{window.dilation}) is longer than its input {format_shape(shape)} with padding 'valid'",
        )
    return out


# --- recurrent cells and layers -------------------------------------------------------------

# The canonical gate names, in the order of the canonical arrays (docs/weights.md).
LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("z", "r", "g")
PEEPHOLES = ("i", "f", "o")


class _CellKeys(_Node):
    units: Units
    use_bias: bool = True
    dropout: Rate = 0.0
    recurrent_dropout: Rate = 0.0

    @property
    def trains_differently(self) -> bool:
        return self.dropout > 0 or self.recurrent_dropout > 0


class _SimpleKeys(_CellKeys):
    activation: Activation = "tanh"


class _LSTMKeys(_CellKeys):
    activation: Activation = "tanh"
    recurrent_activation: Activation = "sigmoid"
    unit_forget_bias: bool = True


class _GRUKeys(_CellKeys):
    activation: Activation = "tanh"
    recurrent_activation: Activation = "sigmoid"
    reset_after: bool = True


def _gate_arrays(prefix: str, cell, n_in: int, gates: tuple[str, ...], forget_ones: bool = False) -> Iterator[Array]:
    """kernel_{g} [in, units], recurrent_kernel_{g} [units, units], bias_{g} [units] per gate; each
    kind drawn as one Keras tensor of all gates."""
    u, n = cell.units, len(gates)
    for k, g in enumerate(gates):
        yield Array(f"{prefix}kernel_{g}", (n_in, u), GLOROT, group=prefix + "kernel", part=k, parts=n)
    for k, g in enumerate(gates):
        yield Array(f"{prefix}recurrent_kernel_{g}", (u, u), ORTHOGONAL, group=prefix + "rk", part=k, parts=n)
    if cell.use_bias:
        for g in gates:
            yield Array(f"{prefix}bias_{g}", (u,), ONES if forget_ones and g == "f" else ZEROS)


class SimpleRNNCell(_SimpleKeys):
    """y(t) = act(x(t) W_x + y(t-1) W_y + b)."""

    type: Literal["simple_rnn"]

    def arrays(self, prefix: str, n_in: int) -> Iterator[Array]:
        """kernel [in, units], recurrent_kernel [units, units], bias [units]."""
        u = self.units
        yield Array(prefix + "kernel", (n_in, u), GLOROT)
        yield Array(prefix + "recurrent_kernel", (u, u), ORTHOGONAL)
        if self.use_bias:
            yield Array(prefix + "bias", (u,), ZEROS)


class LSTMCell(_LSTMKeys):
    """LSTM with gates i, f, g, o."""

    type: Literal["lstm"]

    def arrays(self, prefix: str, n_in: int) -> Iterator[Array]:
        """Per gate i, f, g, o: kernel_{g}, recurrent_kernel_{g}, bias_{g} (the f bias ones with unit_forget_bias)."""
        return _gate_arrays(prefix, self, n_in, LSTM_GATES, forget_ones=self.unit_forget_bias)


class GRUCell(_GRUKeys):
    """GRU with gates z, r and candidate g; `reset_after` picks where r applies."""

    type: Literal["gru"]

    def arrays(self, prefix: str, n_in: int) -> Iterator[Array]:
        """Per gate z, r, g: kernel_{g}, recurrent_kernel_{g}, bias_{g}; with reset_after also recurrent_bias_{g}."""
        yield from _gate_arrays(prefix, self, n_in, GRU_GATES)
        if self.use_bias and self.reset_after:
            for g in GRU_GATES:
                yield Array(f"{prefix}recurrent_bias_{g}", (self.units,), ZEROS)


class LNSimpleRNNCell(_SimpleKeys):
    """y(t) = act(LayerNorm(x(t) W_x + y(t-1) W_y + b))."""

    type: Literal["ln_simple_rnn"]
    epsilon: float = Field(0.001, gt=0.0)

    def arrays(self, prefix: str, n_in: int) -> Iterator[Array]:
        """simple_rnn's arrays, then gamma, beta [units] of the layer norm."""
        yield from SimpleRNNCell.arrays(self, prefix, n_in)
        yield Array(prefix + "gamma", (self.units,), ONES)
        yield Array(prefix + "beta", (self.units,), ZEROS)


class PeepholeLSTMCell(_LSTMKeys):
    """LSTM whose i and f gates see c(t-1) and whose o gate sees c(t) (Gers and Schmidhuber, 2000)."""

    type: Literal["peephole_lstm"]

    def arrays(self, prefix: str, n_in: int) -> Iterator[Array]:
        """lstm's arrays, then peephole_i, peephole_f, peephole_o [units]."""
        yield from _gate_arrays(prefix, self, n_in, LSTM_GATES, forget_ones=self.unit_forget_bias)
        for g in PEEPHOLES:
            yield Array(f"{prefix}peephole_{g}", (self.units,), GLOROT)


CELL_CLASSES: tuple[type[_Node], ...] = (SimpleRNNCell, LSTMCell, GRUCell, LNSimpleRNNCell, PeepholeLSTMCell)
Cell = Annotated[Union[CELL_CLASSES], Field(discriminator="type")]


class _Recurrent(_Layer):
    """A layer that runs one cell over time (its `cell`, or for simple_rnn, lstm, gru its own keys)."""

    mask_rule: ClassVar[str] = RECURRENT

    @property
    def cell_node(self):
        """The cell this layer runs: `cell` for rnn; for simple_rnn, lstm and gru the cell of the same type and keys."""
        fields = {k: getattr(self, k) for k in type(self).model_fields if k not in ("return_sequences", "go_backwards")}
        return _CELL_OF[type(self)].model_construct(**fields)

    @property
    def trains_differently(self) -> bool:
        return self.cell_node.trains_differently

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        units = self.cell_node.units
        return (None, shape[1], units) if self.return_sequences else (None, units)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """The cell's arrays, with no extra prefix."""
        return self.cell_node.arrays(prefix, shape[-1])

    @property
    def reversed_output(self) -> bool:
        """Whether its output steps come in reverse order (go_backwards with return_sequences, as Keras)."""
        return self.go_backwards and self.return_sequences

    def time_map(self, shape: Shape, out: Shape) -> Optional[TimeMap]:
        if self.reversed_output:
            # Output step j is input step T-1-j: every output step has seen the last input step.
            return TimeMap.whole(shape[1])
        return TimeMap.recurrent() if self.return_sequences else None


class SimpleRNN(_SimpleKeys, _Recurrent):
    type: Literal["simple_rnn"]
    return_sequences: bool = False
    go_backwards: bool = False


class LSTM(_LSTMKeys, _Recurrent):
    type: Literal["lstm"]
    return_sequences: bool = False
    go_backwards: bool = False


class GRU(_GRUKeys, _Recurrent):
    type: Literal["gru"]
    return_sequences: bool = False
    go_backwards: bool = False


class RNN(_Recurrent):
    """A recurrent layer around one cell, as keras.layers.RNN."""

    type: Literal["rnn"]
    cell: Cell
    return_sequences: bool = False
    go_backwards: bool = False

    @property
    def cell_node(self):
        return self.cell


_CELL_OF = {SimpleRNN: SimpleRNNCell, LSTM: LSTMCell, GRU: GRUCell}

RecurrentLayer = Annotated[Union[SimpleRNN, LSTM, GRU, RNN], Field(discriminator="type")]


class Bidirectional(_Layer):
    type: Literal["bidirectional"]
    layer: RecurrentLayer
    merge_mode: Literal["concat", "sum", "mul", "ave"] = "concat"

    mask_rule: ClassVar[str] = RECURRENT
    reversed_output: ClassVar[bool] = False  # its outputs are in input order

    @property
    def trains_differently(self) -> bool:
        return self.layer.trains_differently

    @model_validator(mode="after")
    def _forward_layer_reads_forwards(self):
        if self.layer.go_backwards:
            # keras.layers.Bidirectional raises "Forward layer and backward layer should have different `go_backwards` value".
            raise _custom_error("bidirectional_go_backwards", "go_backwards cannot be set on the layer a bidirectional wraps: its backward pass reads backwards already (Keras refuses it)")
        return self

    @property
    def return_sequences(self) -> bool:
        return self.layer.return_sequences

    def output_shape(self, index: int, shape: Shape) -> Shape:
        inner = self.layer.output_shape(index, shape)
        return _per_step(inner, inner[-1] * (2 if self.merge_mode == "concat" else 1))

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """forward.{arrays} and backward.{arrays} of the wrapped layer."""
        yield from self.layer.arrays(prefix + "forward.", shape)
        yield from self.layer.arrays(prefix + "backward.", shape)

    def time_map(self, shape: Shape, out: Shape) -> Optional[TimeMap]:
        # The backward pass reads the sequence from its end: every output step has seen the last input step.
        return TimeMap.whole(shape[1]) if self.layer.return_sequences else None


# --- feed-forward layers ---------------------------------------------------------------------


class Dense(_Layer):
    type: Literal["dense"]
    mask_rule: ClassVar[str] = PASSES
    units: Units
    activation: Activation = "linear"
    use_bias: bool = True

    def output_shape(self, index: int, shape: Shape) -> Shape:
        return _per_step(shape, self.units)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """kernel [in, units], bias [units]."""
        yield Array(prefix + "kernel", (shape[-1], self.units), GLOROT)
        if self.use_bias:
            yield Array(prefix + "bias", (self.units,), ZEROS)


class _SameShape(_Layer):
    """A layer whose output has its input's shape (a per-step one: it passes a mask on)."""

    mask_rule: ClassVar[str] = PASSES

    def output_shape(self, index: int, shape: Shape) -> Shape:
        return shape


class Dropout(_SameShape):
    type: Literal["dropout"]
    rate: Rate

    @property
    def trains_differently(self) -> bool:
        return self.rate > 0


class ActivationLayer(_SameShape):
    type: Literal["activation"]
    activation: Activation


StepLayer = Annotated[Union[Dense, ActivationLayer, Dropout], Field(discriminator="type")]


class TimeDistributed(_Layer):
    type: Literal["time_distributed"]
    mask_rule: ClassVar[str] = PASSES
    layer: StepLayer

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape, "to distribute over")
        return self.layer.output_shape(index, shape)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """The per-step layer's arrays, under the same prefix."""
        return self.layer.arrays(prefix, shape)

    @property
    def trains_differently(self) -> bool:
        return self.layer.trains_differently


class Flatten(_Layer):
    type: Literal["flatten"]

    def output_shape(self, index: int, shape: Shape) -> Shape:
        if len(shape) == 2:
            return shape
        if shape[1] is None:
            raise ShapeError(index, f"flatten needs a fixed time length, got {format_shape(shape)}; set input.shape's time steps")
        return (None, shape[1] * shape[2])


class RepeatVector(_Layer):
    type: Literal["repeat_vector"]
    n: Annotated[int, Field(ge=1)]

    def output_shape(self, index: int, shape: Shape) -> Shape:
        if len(shape) != 2:
            raise ShapeError(index, f"repeat_vector needs a vector [batch, features], got the sequence {format_shape(shape)}")
        return (None, self.n, shape[1])


class BatchNorm(_SameShape):
    type: Literal["batch_norm"]
    mask_rule: ClassVar[str] = READS  # its training moments skip masked steps, as Keras's
    momentum: float = Field(0.99, ge=0.0, le=1.0)
    epsilon: float = Field(0.001, gt=0.0)

    @property
    def trains_differently(self) -> bool:
        return True  # batch statistics

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """gamma, beta [features] (trainable); moving_mean, moving_variance [features] (not)."""
        f = shape[-1]
        yield Array(prefix + "gamma", (f,), ONES)
        yield Array(prefix + "beta", (f,), ZEROS)
        yield Array(prefix + "moving_mean", (f,), ZEROS, trainable=False)
        yield Array(prefix + "moving_variance", (f,), ONES, trainable=False)


class LayerNorm(_SameShape):
    type: Literal["layer_norm"]
    epsilon: float = Field(0.001, gt=0.0)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """gamma, beta [features]."""
        yield Array(prefix + "gamma", (shape[-1],), ONES)
        yield Array(prefix + "beta", (shape[-1],), ZEROS)


# --- convolutional layers --------------------------------------------------------------------

Positive = Annotated[int, Field(ge=1)]


def _conv_arrays(prefix: str, kernel_size: int, n_in: int, filters: int, use_bias: bool = True) -> Iterator[Array]:
    yield Array(prefix + "kernel", (kernel_size, n_in, filters), GLOROT)
    if use_bias:
        yield Array(prefix + "bias", (filters,), ZEROS)


def _custom_error(kind: str, msg: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "{msg}", {"msg": msg})


class Conv1D(_Layer):
    type: Literal["conv1d"]
    filters: Positive
    kernel_size: Positive
    strides: Positive = 1
    padding: Literal["valid", "same", "causal"] = "valid"
    dilation_rate: Positive = 1
    groups: Positive = 1
    activation: Activation = "linear"
    use_bias: bool = True

    @model_validator(mode="after")
    def _stride_or_dilation(self):
        # Keras refuses the combination; seqspec promises the same function on every backend.
        if self.strides > 1 and self.dilation_rate > 1:
            raise _custom_error(
                "stride_and_dilation",
                f"strides {self.strides} with dilation_rate {self.dilation_rate}: a convolution may be strided or dilated, not both (Keras refuses it)",
            )
        if self.filters % self.groups:
            raise _custom_error("groups", f"filters {self.filters} is not divisible by groups {self.groups}")
        return self

    @property
    def window(self) -> Window:
        return Window(self.kernel_size, self.strides, self.dilation_rate, self.padding)

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        if shape[2] % self.groups:
            raise ShapeError(index, f"conv1d with groups {self.groups} needs input channels divisible by it, got {format_shape(shape)}")
        return (None, _window_output(index, self, shape, self.window), self.filters)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """kernel [kernel_size, in / groups, filters], bias [filters]."""
        return _conv_arrays(prefix, self.kernel_size, shape[-1] // self.groups, self.filters, self.use_bias)

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        return (self.window,)


class _Pool(_Layer):
    pool_size: Positive
    strides: Optional[Positive] = None
    padding: Literal["valid", "same"] = "valid"

    @property
    def stride(self) -> int:
        """The effective stride: `strides`, or `pool_size` when unset (as Keras)."""
        return self.pool_size if self.strides is None else self.strides

    @property
    def window(self) -> Window:
        return Window(self.pool_size, self.stride, 1, self.padding)

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        return (None, _window_output(index, self, shape, self.window), shape[2])

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        return (self.window,)


class MaxPool1D(_Pool):
    type: Literal["max_pool1d"]


class AvgPool1D(_Pool):
    type: Literal["avg_pool1d"]


class _GlobalPool(_Layer):
    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        return (None, shape[2])


class GlobalMaxPool1D(_GlobalPool):
    type: Literal["global_max_pool1d"]


class GlobalAvgPool1D(_GlobalPool):
    type: Literal["global_avg_pool1d"]
    mask_rule: ClassVar[str] = AVERAGES


# At most this many convolutions in one wavenet block, checked before the rates are expanded.
MAX_WAVENET_CONVOLUTIONS = 10_000


class WaveNetConv(NamedTuple):
    """One convolution inside a wavenet block."""

    name: str  # the canonical arrays' prefix inside the block: `input`, `stack{j}_d{rate}.dilated`, `.residual`
    kernel_size: int
    dilation_rate: int
    in_channels: int
    filters: int


class WaveNet(_Layer):
    """A stack of causal dilated convolutions, simplified (`gated: false`) or as in the paper."""

    type: Literal["wavenet"]
    filters: Positive
    kernel_size: Positive = 2
    dilation_rates: Annotated[list[Positive], Field(min_length=1)] = [1, 2, 4, 8]
    repeats: Positive = 1
    gated: bool = False
    activation: Activation = "relu"

    @model_validator(mode="after")
    def _activation_only_when_simplified(self):
        if self.gated and "activation" in self.model_fields_set:
            raise _custom_error(
                "gated_activation", "activation applies to the simplified form (gated: false); the gated form uses tanh(a) * sigmoid(b)"
            )
        if len(self.dilation_rates) * self.repeats > MAX_WAVENET_CONVOLUTIONS:
            raise _custom_error(
                "wavenet_size",
                f"{len(self.dilation_rates)} dilation rates x repeats {self.repeats:,} is {len(self.dilation_rates) * self.repeats:,} "
                f"convolutions; a wavenet block has at most {MAX_WAVENET_CONVOLUTIONS:,}",
            )
        return self

    @property
    def rates(self) -> list[int]:
        """Every dilation rate in order, `dilation_rates` repeated `repeats` times."""
        return list(self.dilation_rates) * self.repeats

    def convolutions(self, n_in: int) -> list[WaveNetConv]:
        """The block's convolutions in order, on `n_in` input channels: gated, the input convolution
        then a (dilated to 2*filters, 1x1 residual) pair per rate; simplified, one per rate."""
        f, k = self.filters, self.kernel_size
        if not self.gated:
            return [WaveNetConv(f"stack{j}_d{rate}.dilated", k, rate, n_in if j == 0 else f, f) for j, rate in enumerate(self.rates)]
        convs = [WaveNetConv("input", k, 1, n_in, f)]
        for j, rate in enumerate(self.rates):
            convs.append(WaveNetConv(f"stack{j}_d{rate}.dilated", k, rate, f, 2 * f))
            convs.append(WaveNetConv(f"stack{j}_d{rate}.residual", 1, 1, f, f))
        return convs

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        return (None, shape[1], self.filters)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """{conv name}.kernel [k, in, out] and .bias [out] per convolution (see `convolutions`)."""
        for conv in self.convolutions(shape[-1]):
            yield from _conv_arrays(f"{prefix}{conv.name}.", conv.kernel_size, conv.in_channels, conv.filters)

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        # The 1x1 residual convolutions move no step.
        return tuple(Window(c.kernel_size, 1, c.dilation_rate, "causal") for c in self.convolutions(shape[-1]) if not c.name.endswith(".residual"))


# --- padding, cropping and upsampling along time ------------------------------------------------


def _pair(value: Any) -> tuple[int, int]:
    """An int n (n steps at each end) or [left, right], each an integer >= 0."""
    items = value if isinstance(value, list) else [value]
    if not isinstance(value, list) and not (isinstance(value, int) and not isinstance(value, bool)):
        raise _custom_error("pair_type", f"must be an integer or a list [left, right], got {describe(value)}")
    if isinstance(value, list) and len(value) != 2:
        raise _custom_error("pair_length", f"must be an integer or a list [left, right] of two integers, got a list of {len(value)}")
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool):
            raise _custom_error("pair_type", f"must be integers, got {describe(item)}")
        if item < 0:
            raise _custom_error("pair_range", f"must be >= 0, got {item}")
    return (value, value) if not isinstance(value, list) else (value[0], value[1])


_PAIR_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2},
    ],
    "description": "An integer n (n steps at each end), or [left, right].",
}

Pair = Annotated[
    tuple[int, int],
    PlainValidator(_pair),
    PlainSerializer(lambda v: list(v), return_type=Any),
    WithJsonSchema(_PAIR_SCHEMA),
]


class ZeroPadding1D(_Layer):
    """Zeros added at the start and end of the time axis, as keras.layers.ZeroPadding1D."""

    type: Literal["zero_padding1d"]
    padding: Pair = Field(1, validate_default=True)

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        return (None, None if shape[1] is None else shape[1] + sum(self.padding), shape[2])

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        return (Window(1, 1, 1, self.padding),)


class Cropping1D(_Layer):
    """Steps dropped from the start and end of the time axis, as keras.layers.Cropping1D."""

    type: Literal["cropping1d"]
    cropping: Pair = Field(1, validate_default=True)

    @property
    def window(self) -> Window:
        return Window(1, 1, 1, (-self.cropping[0], -self.cropping[1]))

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        return (None, _window_output(index, self, shape, self.window), shape[2])

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        return (self.window,)


class UpSampling1D(_Layer):
    """Every step repeated `size` times, as keras.layers.UpSampling1D."""

    type: Literal["upsampling1d"]
    size: Positive = 2

    def output_shape(self, index: int, shape: Shape) -> Shape:
        need_sequence(index, self, shape)
        return (None, None if shape[1] is None else shape[1] * self.size, shape[2])

    def time_ops(self, shape: Shape) -> tuple[TimeOp, ...]:
        return (Upsampling(self.size),)


# --- variable-length sequences and tokens ---------------------------------------------------------


class Masking(_SameShape):
    """A step whose features all equal `mask_value` is masked (and its features set to 0), as keras.layers.Masking."""

    type: Literal["masking"]
    mask_value: float = 0.0
    mask_rule: ClassVar[str] = MAKES


class Embedding(_Layer):
    """Token ids [batch, time] to vectors [batch, time, output_dim], as keras.layers.Embedding;
    with `mask_zero`, id 0 is padding and makes the mask."""

    type: Literal["embedding"]
    input_dim: Positive
    output_dim: Positive
    mask_zero: bool = False
    mask_rule: ClassVar[str] = MAKES

    @model_validator(mode="after")
    def _room_for_tokens(self):
        if self.mask_zero and self.input_dim < 2:
            raise _custom_error("mask_zero_input_dim", f"with mask_zero, id 0 is padding: input_dim must be at least 2 (padding and one token), got {self.input_dim}")
        return self

    def output_shape(self, index: int, shape: Shape) -> Shape:
        if len(shape) != 2 or index != 0:
            raise ShapeError(
                index,
                f"embedding takes token ids [batch, time]: it must be the first layer, on an integer input "
                f"(input: {{shape: [null], dtype: int32}}), got {format_shape(shape)}",
            )
        return (None, shape[1], self.output_dim)

    def arrays(self, prefix: str, shape: Shape) -> Iterator[Array]:
        """embeddings [input_dim, output_dim], drawn as Keras's RandomUniform(-0.05, 0.05)."""
        yield Array(prefix + "embeddings", (self.input_dim, self.output_dim), UNIFORM)

    def time_map(self, shape: Shape, out: Shape) -> Optional[TimeMap]:
        return TimeMap()


LAYER_CLASSES: tuple[type[_Node], ...] = (
    SimpleRNN,
    LSTM,
    GRU,
    RNN,
    Bidirectional,
    Dense,
    TimeDistributed,
    Flatten,
    RepeatVector,
    Dropout,
    ActivationLayer,
    BatchNorm,
    LayerNorm,
    Conv1D,
    MaxPool1D,
    AvgPool1D,
    GlobalMaxPool1D,
    GlobalAvgPool1D,
    WaveNet,
    ZeroPadding1D,
    Cropping1D,
    UpSampling1D,
    Masking,
    Embedding,
)
# One discriminated union over the tuple, so adding a layer type is one line here.
Layer = Annotated[Union[LAYER_CLASSES], Field(discriminator="type")]


# --- input and training ----------------------------------------------------------------------


class Input(_Node):
    """`shape: [time_steps, features]` (time_steps null = any length), or `[features]` for a vector input;
    with `dtype` int32 or int64, `[time_steps]` of token ids."""

    shape: Annotated[list[Optional[Positive]], Field(min_length=1, max_length=2)]
    dtype: Optional[Literal["int32", "int64"]] = None  # None: the spec's float dtype

    @model_validator(mode="after")
    def _tokens_are_one_axis(self):
        if self.dtype is not None and len(self.shape) != 1:
            raise _custom_error(
                "token_shape", f"an integer input is token ids shaped [time_steps] (e.g. shape: [null]), got a shape of {len(self.shape)} axes"
            )
        return self

    @property
    def tokens(self) -> bool:
        """Whether the input is integer token ids [batch, time]."""
        return self.dtype is not None


class SyntheticData(_Node):
    """Two sine waves of random frequency and phase plus uniform noise, per series."""

    source: Literal["synthetic"]
    series: Positive = 10000
    steps: Positive = 50
    split: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=3, max_length=3)] = [
        7000,
        2000,
        1000,
    ]
    seed: int = 42
    # The book trains on the raw series (already within about [-1, 1]), so its numbers stay as printed.
    scale: Literal["none", "standard", "minmax"] = "none"


Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class CSVData(_Node):
    """Windows of `steps` cut from one long series in a CSV file, split in time order."""

    source: Literal["csv"]
    path: str
    columns: Annotated[list[str], Field(min_length=1)]
    steps: Positive
    stride: Positive = 1
    split: Annotated[list[Fraction], Field(min_length=3, max_length=3)] = [0.7, 0.2, 0.1]
    # Spreadsheets in many European locales save ';'-separated "CSV"; tabs come from pasted tables.
    delimiter: Literal[",", ";", "\t", "|"] = ","
    # Real series are in arbitrary units (sunspot counts, prices); unscaled they train badly.
    scale: Literal["none", "standard", "minmax"] = "standard"


class NpyData(_Node):
    """An array shaped [series, time, features] in a .npy file; series are split in order."""

    source: Literal["npy"]
    path: str
    steps: Optional[Positive] = None
    split: Annotated[list[Fraction], Field(min_length=3, max_length=3)] = [0.7, 0.2, 0.1]
    scale: Literal["none", "standard", "minmax"] = "standard"
    # For target kind label: an .npy of one class per series (integer ids, or 0/1 floats).
    labels: Optional[str] = None


class SyntheticTokens(_Node):
    """A built-in sentiment-style token task (seqspec/_labels.py): rows of token ids of random
    lengths, padded with 0 at the end; label 1 when the row holds more "positive" than "negative" tokens."""

    source: Literal["synthetic_tokens"]
    series: Positive = 2000
    steps: Annotated[int, Field(ge=2)] = 40
    min_steps: Positive = 4
    vocabulary: Annotated[int, Field(ge=8)] = 100
    split: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=3, max_length=3)] = [1400, 400, 200]
    seed: int = 42


Data = Annotated[Union[SyntheticData, CSVData, NpyData, SyntheticTokens], Field(discriminator="source")]

# Losses and metrics of target kind label (classification).
CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "binary_crossentropy")


class Target(_Node):
    kind: Literal["next", "horizon", "seq2seq", "label"]
    horizon: Positive = 1


class Optimizer(_Node):
    type: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(0.001, gt=0.0)
    clipnorm: Optional[float] = Field(None, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)


class EarlyStopping(_Node):
    patience: Positive
    restore_best_weights: bool = True


class Train(_Node):
    data: Data
    target: Target
    loss: Literal["mse", "mae", "sparse_categorical_crossentropy", "binary_crossentropy"] = "mse"
    metrics: list[Literal["last_time_step_mse", "mse", "mae", "accuracy"]] = []
    optimizer: Optimizer = Optimizer()
    batch_size: Positive = 32
    epochs: Positive = 20
    early_stopping: Optional[EarlyStopping] = None

    @model_validator(mode="after")
    def _classification_goes_together(self):
        label = self.target.kind == "label"
        if label != (self.loss in CLASSIFICATION_LOSSES):
            want = "sparse_categorical_crossentropy or binary_crossentropy" if label else "mse or mae"
            raise _custom_error("target_loss", f"target kind {self.target.kind} trains with loss {want}, got {self.loss}")
        if not label and "accuracy" in self.metrics:
            raise _custom_error("target_metric", "the metric accuracy scores a classifier (target kind label)")
        if label and any(m != "accuracy" for m in self.metrics):
            raise _custom_error("target_metric", f"a classifier (target kind label) is scored by accuracy, got metrics {self.metrics}")
        if label and (self.data.source != "synthetic_tokens") and (self.data.source != "npy" or self.data.labels is None):
            raise _custom_error("labels", "target kind label needs data.source npy with data.labels (an .npy of one class per series), or synthetic_tokens")
        return self


class Spec(_Node):
    """A whole spec: format version, name, input, layers and an optional `train:` section."""

    seqspec: Literal[1]
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=100)]
    description: str = ""
    seed: Optional[Annotated[int, Field(ge=0, le=2**32 - 1)]] = None
    dtype: Literal["float32", "float64"] = "float32"
    input: Input
    layers: Annotated[list[Layer], Field(min_length=1)]
    train: Optional[Train] = None

    # Where each value sits in its file, when loaded from YAML (seqspec.load sets it).
    _source: Any = PrivateAttr(default=None)

    def where(self, *path: Union[str, int]) -> str:
        """`file:line:col` of the value at `path` (e.g. `where("layers", 2)`), or the spec's name."""
        if self._source is None:
            return f"<{self.name}>"
        return self._source.where(tuple(path))

    def locate(self, *path: Union[str, int]) -> str:
        """`file:line:col: layers[2].layer`: the place and field path of the value at `path`, for errors."""
        return f"{self.where(*path)}: {field_path(path)}" if path else self.where()


def activation_name(act: Activation) -> str:
    """The activation's name, whether written as a string or as a mapping."""
    return act if isinstance(act, str) else act.name


def activation_slope(act: Activation) -> float:
    """The negative slope of a leaky_relu activation (0.2 when written as a bare name)."""
    return act.negative_slope if isinstance(act, LeakyReLU) else 0.2
