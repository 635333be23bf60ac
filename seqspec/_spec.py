"""The spec language, version 1, as frozen Pydantic models: one class per layer and cell type."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr, model_validator, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

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
        close = difflib.get_close_matches(value, ACTIVATIONS, n=1)
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


# --- recurrent cells and layers -------------------------------------------------------------


class _CellKeys(_Node):
    units: Units
    use_bias: bool = True
    dropout: Rate = 0.0
    recurrent_dropout: Rate = 0.0


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


class SimpleRNNCell(_SimpleKeys):
    """y(t) = act(x(t) W_x + y(t-1) W_y + b)."""

    type: Literal["simple_rnn"]


class LSTMCell(_LSTMKeys):
    """LSTM with gates i, f, g, o."""

    type: Literal["lstm"]


class GRUCell(_GRUKeys):
    """GRU with gates z, r and candidate g; `reset_after` picks where r applies."""

    type: Literal["gru"]


class LNSimpleRNNCell(_SimpleKeys):
    """y(t) = act(LayerNorm(x(t) W_x + y(t-1) W_y + b))."""

    type: Literal["ln_simple_rnn"]
    epsilon: float = Field(0.001, gt=0.0)


class PeepholeLSTMCell(_LSTMKeys):
    """LSTM whose i and f gates see c(t-1) and whose o gate sees c(t) (Gers and Schmidhuber, 2000)."""

    type: Literal["peephole_lstm"]


CELL_CLASSES: tuple[type[_Node], ...] = (SimpleRNNCell, LSTMCell, GRUCell, LNSimpleRNNCell, PeepholeLSTMCell)
Cell = Annotated[Union[CELL_CLASSES], Field(discriminator="type")]


class SimpleRNN(_SimpleKeys):
    type: Literal["simple_rnn"]
    return_sequences: bool = False


class LSTM(_LSTMKeys):
    type: Literal["lstm"]
    return_sequences: bool = False


class GRU(_GRUKeys):
    type: Literal["gru"]
    return_sequences: bool = False


class RNN(_Node):
    """A recurrent layer around one cell, as keras.layers.RNN."""

    type: Literal["rnn"]
    cell: Cell
    return_sequences: bool = False


RecurrentLayer = Annotated[Union[SimpleRNN, LSTM, GRU, RNN], Field(discriminator="type")]


class Bidirectional(_Node):
    type: Literal["bidirectional"]
    layer: RecurrentLayer
    merge_mode: Literal["concat", "sum", "mul", "ave"] = "concat"


# --- feed-forward layers ---------------------------------------------------------------------


class Dense(_Node):
    type: Literal["dense"]
    units: Units
    activation: Activation = "linear"
    use_bias: bool = True


class Dropout(_Node):
    type: Literal["dropout"]
    rate: Rate


class ActivationLayer(_Node):
    type: Literal["activation"]
    activation: Activation


StepLayer = Annotated[Union[Dense, ActivationLayer, Dropout], Field(discriminator="type")]


class TimeDistributed(_Node):
    type: Literal["time_distributed"]
    layer: StepLayer


class Flatten(_Node):
    type: Literal["flatten"]


class RepeatVector(_Node):
    type: Literal["repeat_vector"]
    n: Annotated[int, Field(ge=1)]


class BatchNorm(_Node):
    type: Literal["batch_norm"]
    momentum: float = Field(0.99, ge=0.0, le=1.0)
    epsilon: float = Field(0.001, gt=0.0)


class LayerNorm(_Node):
    type: Literal["layer_norm"]
    epsilon: float = Field(0.001, gt=0.0)


# --- convolutional layers --------------------------------------------------------------------

Positive = Annotated[int, Field(ge=1)]


class Conv1D(_Node):
    type: Literal["conv1d"]
    filters: Positive
    kernel_size: Positive
    strides: Positive = 1
    padding: Literal["valid", "same", "causal"] = "valid"
    dilation_rate: Positive = 1
    activation: Activation = "linear"
    use_bias: bool = True

    @model_validator(mode="after")
    def _stride_or_dilation(self):
        # Keras refuses the combination; seqspec promises the same function on every backend.
        if self.strides > 1 and self.dilation_rate > 1:
            raise PydanticCustomError(
                "stride_and_dilation",
                "{msg}",
                {"msg": f"strides {self.strides} with dilation_rate {self.dilation_rate}: a convolution may be strided or dilated, not both (Keras refuses it)"},
            )
        return self


class _Pool(_Node):
    pool_size: Positive
    strides: Optional[Positive] = None
    padding: Literal["valid", "same"] = "valid"

    @property
    def stride(self) -> int:
        """The effective stride: `strides`, or `pool_size` when unset (as Keras)."""
        return self.pool_size if self.strides is None else self.strides


class MaxPool1D(_Pool):
    type: Literal["max_pool1d"]


class AvgPool1D(_Pool):
    type: Literal["avg_pool1d"]


class GlobalMaxPool1D(_Node):
    type: Literal["global_max_pool1d"]


class GlobalAvgPool1D(_Node):
    type: Literal["global_avg_pool1d"]


class WaveNet(_Node):
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
            raise PydanticCustomError(
                "gated_activation",
                "{msg}",
                {"msg": "activation applies to the simplified form (gated: false); the gated form uses tanh(a) * sigmoid(b)"},
            )
        return self

    @property
    def rates(self) -> list[int]:
        """Every dilation rate in order, `dilation_rates` repeated `repeats` times."""
        return list(self.dilation_rates) * self.repeats


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
)
# One discriminated union over the tuple, so adding a layer type is one line here.
Layer = Annotated[Union[LAYER_CLASSES], Field(discriminator="type")]



# --- input and training ----------------------------------------------------------------------


class Input(_Node):
    """`shape: [time_steps, features]` (time_steps null = any length), or `[features]` for a vector input."""

    shape: Annotated[list[Optional[Positive]], Field(min_length=1, max_length=2)]


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


Data = Annotated[Union[SyntheticData, CSVData, NpyData], Field(discriminator="source")]


class Target(_Node):
    kind: Literal["next", "horizon", "seq2seq"]
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
    loss: Literal["mse", "mae"] = "mse"
    metrics: list[Literal["last_time_step_mse", "mse", "mae"]] = []
    optimizer: Optimizer = Optimizer()
    batch_size: Positive = 32
    epochs: Positive = 20
    early_stopping: Optional[EarlyStopping] = None


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


def activation_name(act: Activation) -> str:
    """The activation's name, whether written as a string or as a mapping."""
    return act if isinstance(act, str) else act.name


def activation_slope(act: Activation) -> float:
    """The negative slope of a leaky_relu activation (0.2 when written as a bare name)."""
    return act.negative_slope if isinstance(act, LeakyReLU) else 0.2
