"""The Keras pieces Keras 3 lacks: leaky_relu with a slope, ln_simple_rnn and peephole_lstm cells, the wavenet block."""

from __future__ import annotations

import keras
from keras import ops
from keras import activations, initializers, ops

# Keras's RNN layer creates one dropout mask per sequence (and clears it after) only for cells
# that inherit this mixin; it is not exported publicly, so the custom cells import it from
# keras.src to get exactly the built-in cells' dropout semantics.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

import seqspec

PACKAGE = "seqspec"
WIDE = "float64"  # the dtype of the ln_simple_rnn recurrence (see LNSimpleRNNCell.call)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LeakyReLU:
    """leaky_relu with its negative slope, as an activation object that survives save and reload.

    A plain function (or functools.partial) would lose its slope in a saved .keras file.
    """

    def __init__(self, negative_slope: float = 0.2):
        self.negative_slope = float(negative_slope)

    def __call__(self, x):
        # Not activations.leaky_relu: TensorFlow rounds its slope to float32, 1.5e-8 off in float64.
        # A Python float keeps x's dtype; ops.cast(0.3, "float64") would go through float32.
        return ops.where(x >= 0, x, x * self.negative_slope)

    def get_config(self) -> dict:
        return {"negative_slope": self.negative_slope}

    @classmethod
    def from_config(cls, config: dict) -> "LeakyReLU":
        return cls(**config)

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


@keras.saving.register_keras_serializable(package=PACKAGE)
class GELU:
    """gelu in its exact (erf) form, as Keras's default approximate=False, written out because
    TensorFlow's own is up to 5e-9 off in float64 (its constants are float32)."""

    def __call__(self, x):
        return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "GELU":
        return cls()


def _by_name(act) -> str:
    return seqspec.activation_name(act)


# Each activation name to the maker of its Keras activation: Keras's own by name, or an object
# for the two whose Keras form is not exact in float64 (leaky_relu carries its slope).
ACTIVATIONS = seqspec.Table(
    "keras",
    "activation",
    "ACTIVATIONS",
    __name__,
    {
        **{name: _by_name for name in ("linear", "relu", "tanh", "sigmoid", "softmax", "elu", "selu", "softplus", "silu", "hard_sigmoid")},
        "gelu": lambda act: GELU(),
        "leaky_relu": lambda act: LeakyReLU(seqspec.activation_slope(act)),
    },
)


def keras_activation(act) -> str | LeakyReLU | GELU:
    """The Keras activation of a spec activation, through ACTIVATIONS."""
    return ACTIVATIONS.lookup(seqspec.activation_name(act))(act)


class _Cell(DropoutRNNCell, keras.layers.Layer):
    """Shared plumbing of the custom cells: keys, dropout seed and the kernel/recurrent/bias arrays."""

    gates = 1  # how many units-wide blocks the kernel, recurrent kernel and bias hold

    def __init__(
        self,
        units: int,
        activation="tanh",
        use_bias: bool = True,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        if units < 1:
            raise ValueError(f"units must be a positive integer. Received: units={units}")
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _bias_initializer(self):
        return "zeros"

    def build(self, input_shape):
        super().build(input_shape)
        width = self.gates * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], width), name="kernel", initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width), name="recurrent_kernel", initializer="orthogonal")
        self.bias = self.add_weight(shape=(width,), name="bias", initializer=self._bias_initializer()) if self.use_bias else None

    def _pre_activation(self, inputs, h_prev, training):
        """x W_x + h W_h + b, with the per-sequence dropout masks on x and h in training."""
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and 0.0 < self.recurrent_dropout < 1.0:
            h_prev = h_prev * self.get_recurrent_dropout_mask(h_prev)
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel)
        return z if self.bias is None else z + self.bias

    def get_initial_state(self, batch_size=None):
        sizes = self.state_size if isinstance(self.state_size, list) else [self.state_size]
        return [ops.zeros((batch_size, d), dtype=self.compute_dtype) for d in sizes]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class LNSimpleRNNCell(_Cell):
    """Layer-normalised simple RNN cell: y(t) = act(LayerNorm(x(t) W_x + y(t-1) W_y + b)).

    Weights: kernel [in, units], recurrent_kernel [units, units], bias [units], and the layer
    norm's gamma [units] and beta [units]; LayerNorm uses the biased variance and `epsilon`.
    """

    def __init__(self, units: int, epsilon: float = 0.001, **kwargs):
        super().__init__(units, **kwargs)
        self.epsilon = float(epsilon)
        self.state_size = [units, units]  # hi and lo parts of the float64 state (see call)
        self.output_size = units

    def build(self, input_shape):
        super().build(input_shape)
        self.gamma = self.add_weight(shape=(self.units,), name="gamma", initializer="ones")
        self.beta = self.add_weight(shape=(self.units,), name="beta", initializer="zeros")

    def call(self, inputs, states, training=False):
        # The recurrence runs in float64 whatever the layer's dtype, as in the torch backend:
        # layer normalisation divides by the spread of the pre-activations, which amplifies
        # float32 rounding of the state over long sequences. keras.layers.RNN keeps states in
        # the layer's dtype, so the float64 state travels as two parts, h = hi + lo (hi the
        # state rounded to the layer's dtype, lo the rest), which hold about 48 bits of it.
        hi, lo = states
        h_prev = ops.cast(hi, WIDE) + ops.cast(lo, WIDE)
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and 0.0 < self.recurrent_dropout < 1.0:
            h_prev = h_prev * ops.cast(self.get_recurrent_dropout_mask(hi), WIDE)
        z = ops.matmul(ops.cast(inputs, WIDE), ops.cast(self.kernel, WIDE)) + ops.matmul(h_prev, ops.cast(self.recurrent_kernel, WIDE))
        if self.bias is not None:
            z = z + ops.cast(self.bias, WIDE)
        mean, variance = ops.moments(z, axes=[-1], keepdims=True)
        z = (z - mean) * ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, WIDE) + ops.cast(self.beta, WIDE)
        h = self.activation(z)
        y = ops.cast(h, self.compute_dtype)
        return y, [y, ops.cast(h - ops.cast(y, WIDE), self.compute_dtype)]

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeepholeLSTMCell(_Cell):
    """LSTM cell with peepholes (Gers and Schmidhuber, 2000): i and f see c(t-1), o sees c(t).

    i = rec_act(x W_i + h U_i + b_i + p_i * c(t-1)), f likewise with p_f,
    c(t) = f * c(t-1) + i * act(x W_c + h U_c + b_c), o = rec_act(x W_o + h U_o + b_o + p_o * c(t)),
    h(t) = o * act(c(t)). Weights: kernel [in, 4*units] and recurrent_kernel [units, 4*units] in
    Keras gate order (i|f|c|o), bias [4*units], and the elementwise peepholes
    peephole_i, peephole_f, peephole_o [units] (glorot_uniform, as Keras 2's PeepholeLSTMCell).
    """

    gates = 4

    def __init__(self, units: int, recurrent_activation="sigmoid", unit_forget_bias: bool = True, **kwargs):
        super().__init__(units, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.unit_forget_bias = unit_forget_bias
        self.state_size = [units, units]
        self.output_size = units

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return "zeros"
        units = self.units

        def forget_ones(shape, dtype=None):
            return ops.concatenate(
                [ops.zeros((units,), dtype), ops.ones((units,), dtype), ops.zeros((2 * units,), dtype)]
            )

        return forget_ones

    def build(self, input_shape):
        super().build(input_shape)
        self.peephole_i = self.add_weight(shape=(self.units,), name="peephole_i", initializer="glorot_uniform")
        self.peephole_f = self.add_weight(shape=(self.units,), name="peephole_f", initializer="glorot_uniform")
        self.peephole_o = self.add_weight(shape=(self.units,), name="peephole_o", initializer="glorot_uniform")

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states
        z_i, z_f, z_c, z_o = ops.split(self._pre_activation(inputs, h_prev, training), 4, axis=-1)
        i = self.recurrent_activation(z_i + self.peephole_i * c_prev)
        f = self.recurrent_activation(z_f + self.peephole_f * c_prev)
        c = f * c_prev + i * self.activation(z_c)
        o = self.recurrent_activation(z_o + self.peephole_o * c)
        h = o * self.activation(c)
        return h, [h, c]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class WaveNet(keras.layers.Layer):
    """A stack of causal dilated Conv1D layers, one per rate in `rates`; [batch, time, in] -> [batch, time, filters].

    gated=False: each convolution has `activation` and feeds the next.
    gated=True (the paper): `input_conv` (kernel_size, filters channels); then per rate a dilated
    convolution to 2*filters channels, tanh(first half) * sigmoid(second half), and a 1x1
    `residual` convolution back to filters channels whose output is added to the running input and
    kept as a skip output; the block returns relu(sum of the skips).
    Sub-layers: `input_conv` (gated only), `dilated[j]`, `residual[j]` (gated only).
    """

    def __init__(self, filters: int, kernel_size: int, rates: list[int], gated: bool = False, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.rates = list(rates)
        self.gated = gated
        self.activation = activations.get(activation)
        policy = self.dtype_policy

        def conv(channels, kernel, rate=1, act=None):
            return keras.layers.Conv1D(channels, kernel, dilation_rate=rate, padding="causal", activation=act, dtype=policy)

        if gated:
            self.input_conv = conv(filters, kernel_size)
            self.dilated = [conv(2 * filters, kernel_size, rate) for rate in self.rates]
            self.residual = [conv(filters, 1) for _ in self.rates]
        else:
            self.input_conv = None
            self.dilated = [conv(filters, kernel_size, rate, self.activation) for rate in self.rates]
            self.residual = []

    def build(self, input_shape):
        # Built here, not lazily in call, so that a reloaded model has every variable before
        # its weights are read back.
        shape = tuple(input_shape)
        if self.input_conv is not None:
            self.input_conv.build(shape)
            shape = shape[:-1] + (self.filters,)
        for dilated in self.dilated:
            dilated.build(shape)
            shape = shape[:-1] + (self.filters,)
        for residual in self.residual:
            residual.build(shape)

    def call(self, inputs):
        if not self.gated:
            h = inputs
            for dilated in self.dilated:
                h = dilated(h)
            return h
        h = self.input_conv(inputs)
        skips = None
        for dilated, residual in zip(self.dilated, self.residual):
            a = dilated(h)
            gate = ops.tanh(a[..., : self.filters]) * ops.sigmoid(a[..., self.filters :])
            s = residual(gate)
            h = h + s
            skips = s if skips is None else skips + s
        return ops.relu(skips)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "rates": self.rates,
            "gated": self.gated,
            "activation": activations.serialize(self.activation),
        }
