"""Builders: one function per spec node class, from the node to the Keras layer or cell that computes it."""

from __future__ import annotations

import dataclasses
from typing import Optional

import keras

import seqspec as s

from ._layers import LNSimpleRNNCell, PeepholeLSTMCell, WaveNet, keras_activation

BACKEND_NAME = "keras"


@dataclasses.dataclass(frozen=True)
class Site(s.Site):
    """seqspec.Site, plus the Keras name to give the layer: `layers.{i}` for a top-level one, None
    for a nested one (Keras names it)."""

    name: Optional[str] = None

    def nested(self, key: str) -> "Site":
        return dataclasses.replace(self, path=self.path + (key,), name=None)


def build(node, site: Site):
    """The Keras layer or cell of any node, through BUILDERS (a missing entry is a located BackendError)."""
    return BUILDERS.lookup(node, site.where())(node, site)


# --- recurrent cells ---------------------------------------------------------------------------


def _cell_keys(node, site: Site) -> dict:
    return dict(
        units=node.units,
        activation=keras_activation(node.activation),
        use_bias=node.use_bias,
        dropout=node.dropout,
        recurrent_dropout=node.recurrent_dropout,
        dtype=site.dtype,
    )


def _gate_keys(node) -> dict:
    return dict(recurrent_activation=keras_activation(node.recurrent_activation))


def simple_rnn_cell(node, site: Site):
    return keras.layers.SimpleRNNCell(**_cell_keys(node, site))


def lstm_cell(node, site: Site):
    return keras.layers.LSTMCell(**_cell_keys(node, site), **_gate_keys(node), unit_forget_bias=node.unit_forget_bias)


def gru_cell(node, site: Site):
    return keras.layers.GRUCell(**_cell_keys(node, site), **_gate_keys(node), reset_after=node.reset_after)


def ln_simple_rnn_cell(node, site: Site):
    return LNSimpleRNNCell(**_cell_keys(node, site), epsilon=node.epsilon)


def peephole_lstm_cell(node, site: Site):
    return PeepholeLSTMCell(**_cell_keys(node, site), **_gate_keys(node), unit_forget_bias=node.unit_forget_bias)


# --- recurrent layers --------------------------------------------------------------------------


def simple_rnn(node: s.SimpleRNN, site: Site):
    return keras.layers.SimpleRNN(
        **_cell_keys(node, site), return_sequences=node.return_sequences, go_backwards=node.go_backwards, name=site.name
    )


def lstm(node: s.LSTM, site: Site):
    return keras.layers.LSTM(
        **_cell_keys(node, site),
        **_gate_keys(node),
        unit_forget_bias=node.unit_forget_bias,
        return_sequences=node.return_sequences,
        go_backwards=node.go_backwards,
        name=site.name,
    )


def gru(node: s.GRU, site: Site):
    return keras.layers.GRU(
        **_cell_keys(node, site),
        **_gate_keys(node),
        reset_after=node.reset_after,
        return_sequences=node.return_sequences,
        go_backwards=node.go_backwards,
        name=site.name,
    )


def rnn(node: s.RNN, site: Site):
    cell = build(node.cell, site.nested("cell"))
    return keras.layers.RNN(cell, return_sequences=node.return_sequences, go_backwards=node.go_backwards, dtype=site.dtype, name=site.name)


def bidirectional(node: s.Bidirectional, site: Site):
    inner = build(node.layer, site.nested("layer"))
    return keras.layers.Bidirectional(inner, merge_mode=node.merge_mode, dtype=site.dtype, name=site.name)


# --- feed-forward layers -----------------------------------------------------------------------


def dense(node: s.Dense, site: Site):
    return keras.layers.Dense(
        node.units, activation=keras_activation(node.activation), use_bias=node.use_bias, dtype=site.dtype, name=site.name
    )


def time_distributed(node: s.TimeDistributed, site: Site):
    """The per-step layer itself, which Keras applies to the last axis of every step.

    Not keras.layers.TimeDistributed: in Keras 3.15, inside a tf.function whose input shape is
    unknown (predict, fit), it mixes the batch and time axes (measured: an input of shape
    (3, 7, 4) through TimeDistributed(Dense(3)) came out (3, 3, 3)). Dense, Activation and
    Dropout, the only layers the spec lets it wrap, compute the same function without it.
    """
    return build(node.layer, dataclasses.replace(site, path=site.path + ("layer",)))


def flatten(node: s.Flatten, site: Site):
    return keras.layers.Flatten(dtype=site.dtype, name=site.name)


def repeat_vector(node: s.RepeatVector, site: Site):
    return keras.layers.RepeatVector(node.n, dtype=site.dtype, name=site.name)


def dropout(node: s.Dropout, site: Site):
    return keras.layers.Dropout(node.rate, dtype=site.dtype, name=site.name)


def activation(node: s.ActivationLayer, site: Site):
    return keras.layers.Activation(keras_activation(node.activation), dtype=site.dtype, name=site.name)


def batch_norm(node: s.BatchNorm, site: Site):
    return keras.layers.BatchNormalization(
        axis=-1, momentum=node.momentum, epsilon=node.epsilon, dtype=site.dtype, name=site.name
    )


def layer_norm(node: s.LayerNorm, site: Site):
    return keras.layers.LayerNormalization(axis=-1, epsilon=node.epsilon, dtype=site.dtype, name=site.name)


# --- convolutional layers ----------------------------------------------------------------------


def conv1d(node: s.Conv1D, site: Site):
    if node.strides > 1 and node.dilation_rate > 1:
        # TensorFlow's convolution refuses the combination; a strided slice of a stride-1
        # output would compute it, but only at the cost of every skipped output step.
        raise site.unsupported(
            "strides",
            f"cannot combine strides > 1 with dilation_rate > 1 (TensorFlow's convolution refuses it); "
            f"received strides={node.strides}, dilation_rate={node.dilation_rate}",
        )
    return keras.layers.Conv1D(
        node.filters,
        node.kernel_size,
        strides=node.strides,
        padding=node.padding,
        dilation_rate=node.dilation_rate,
        groups=node.groups,
        activation=keras_activation(node.activation),
        use_bias=node.use_bias,
        dtype=site.dtype,
        name=site.name,
    )


def max_pool1d(node: s.MaxPool1D, site: Site):
    return keras.layers.MaxPooling1D(node.pool_size, strides=node.stride, padding=node.padding, dtype=site.dtype, name=site.name)


def avg_pool1d(node: s.AvgPool1D, site: Site):
    # TensorFlow's 'same' average excludes the padding from each window's count.
    return keras.layers.AveragePooling1D(node.pool_size, strides=node.stride, padding=node.padding, dtype=site.dtype, name=site.name)


def global_max_pool1d(node: s.GlobalMaxPool1D, site: Site):
    return keras.layers.GlobalMaxPooling1D(dtype=site.dtype, name=site.name)


def global_avg_pool1d(node: s.GlobalAvgPool1D, site: Site):
    return keras.layers.GlobalAveragePooling1D(dtype=site.dtype, name=site.name)


def wavenet(node: s.WaveNet, site: Site):
    return WaveNet(
        node.filters,
        node.kernel_size,
        node.rates,
        gated=node.gated,
        activation=keras_activation(node.activation),
        dtype=site.dtype,
        name=site.name,
    )


# --- padding, cropping and upsampling along time -------------------------------------------------


def zero_padding1d(node: s.ZeroPadding1D, site: Site):
    return keras.layers.ZeroPadding1D(node.padding, dtype=site.dtype, name=site.name)


def cropping1d(node: s.Cropping1D, site: Site):
    return keras.layers.Cropping1D(node.cropping, dtype=site.dtype, name=site.name)


def upsampling1d(node: s.UpSampling1D, site: Site):
    return keras.layers.UpSampling1D(node.size, dtype=site.dtype, name=site.name)


# --- variable-length sequences and tokens ------------------------------------------------------------


def masking(node: s.Masking, site: Site):
    return keras.layers.Masking(node.mask_value, dtype=site.dtype, name=site.name)


def embedding(node: s.Embedding, site: Site):
    return keras.layers.Embedding(node.input_dim, node.output_dim, mask_zero=node.mask_zero, dtype=site.dtype, name=site.name)


BUILDERS: s.Table = s.Table(
    BACKEND_NAME,
    "builder",
    "BUILDERS",
    __name__,
    {
        s.SimpleRNNCell: simple_rnn_cell,
        s.LSTMCell: lstm_cell,
        s.GRUCell: gru_cell,
        s.LNSimpleRNNCell: ln_simple_rnn_cell,
        s.PeepholeLSTMCell: peephole_lstm_cell,
        s.SimpleRNN: simple_rnn,
        s.LSTM: lstm,
        s.GRU: gru,
        s.RNN: rnn,
        s.Bidirectional: bidirectional,
        s.Dense: dense,
        s.TimeDistributed: time_distributed,
        s.Flatten: flatten,
        s.RepeatVector: repeat_vector,
        s.Dropout: dropout,
        s.ActivationLayer: activation,
        s.BatchNorm: batch_norm,
        s.LayerNorm: layer_norm,
        s.Conv1D: conv1d,
        s.MaxPool1D: max_pool1d,
        s.AvgPool1D: avg_pool1d,
        s.GlobalMaxPool1D: global_max_pool1d,
        s.GlobalAvgPool1D: global_avg_pool1d,
        s.WaveNet: wavenet,
        s.ZeroPadding1D: zero_padding1d,
        s.Cropping1D: cropping1d,
        s.UpSampling1D: upsampling1d,
        s.Masking: masking,
        s.Embedding: embedding,
    },
)


def layer_name(index: int) -> str:
    """The Keras name of spec layer `index`, the prefix of its canonical arrays without the dot."""
    return f"layers.{index}"


def build_model(spec: s.Spec) -> keras.Model:
    """The functional keras.Model of `spec`: keras.Input then one Keras layer per spec layer, named `layers.{i}`."""
    x = inputs = keras.Input(shape=tuple(spec.input.shape), dtype=spec.input.dtype or spec.dtype, name="input")
    info = s.infer(spec)
    for i, (node, li) in enumerate(zip(spec.layers, info.layers)):
        x = build(node, Site(BACKEND_NAME, spec, ("layers", i), li.input_shape, name=layer_name(i)))(x)
    return keras.Model(inputs, x, name=spec.name)
